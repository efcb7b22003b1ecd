package supervise

import (
	"fmt"
	"sync"
	"time"

	"github.com/guardrun/guardrun/cgroup"
)

// The --restart-at threshold judges the working set (cgroup.WorkingSet):
// the group's watcher reports a crossing, and the grace period then
// watches the working set itself, for two reasons. A spike that falls
// back under the threshold within the grace is not restarted (a start-up,
// a burst of requests); and a leak that would reach the ceiling before
// the grace ends is stopped at once, since waiting out the grace would
// hand it to the kernel's OOM killer (a 25 MiB/s leak crosses from 80% of
// a 256 MiB ceiling to the ceiling in about 2 s, under the 3 s default).
const (
	// The grace reads the working set (one memory.stat of the group, 35-45
	// µs on v1 here) every graceStepMin until it has a rate, then a
	// quarter of the time the working set needs to reach its end at that
	// rate, between graceStepMin and graceStepMax: a leak of 200 MiB/s
	// with 40 MiB to go is read every 50 ms, a flat one every 250 ms.
	graceStepMin = 10 * time.Millisecond
	graceStepMax = 250 * time.Millisecond
	// trendSpan is how far back the growth rate is taken: long enough to
	// span a few steps, short enough that a spike which has flattened
	// reads flat.
	trendSpan = 500 * time.Millisecond
	// projectionsToAct: the ceiling must be in reach at two steps in a
	// row, so one jump between two readings does not stop a child.
	projectionsToAct = 2
	// runtimeFloor is the least working set a Node.js or JVM child's
	// group holds over its heap limit when the heap ends: the young
	// generation, code, stacks, native buffers. The runtime's binary is
	// mostly not in it: its page cache is charged to the group that first
	// read it. Measured here under guardrun (node 20, --max-old-space-size
	// H, the largest working set before V8's heap death): H + 13 to H +
	// 22 MiB for an Express app at H = 64, 128 and 205 MiB, idle or under
	// load, and up to H + 45 MiB for a loop that allocates fast. The
	// least is taken, so the heap's end is never thought farther than it
	// is: a guess of H + 32 MiB let the grace wait while V8 died at H + 14
	// (the Express test failed so on a loaded machine).
	runtimeFloor = 12 << 20
	// evidenceWait bounds what a memory restart waits for its evidence
	// (a runtime's report) before the stop signal; less when the ceiling
	// is closer than that.
	evidenceWait = 2 * time.Second
)

// overThreshold is a grace period in progress.
type overThreshold struct {
	end      time.Time
	tick     *time.Timer
	points   []wsPoint // the working set over the last trendSpan, oldest first
	inReach  int       // consecutive steps that found the ceiling within reach
	graceFor time.Duration
}

type wsPoint struct {
	t  time.Time
	ws uint64
}

// crossed handles the watcher's word that the working set reached the
// threshold: an event, then the grace (or, with no grace, the restart).
func (c *child) crossed() {
	if c.over != nil || c.busy() {
		return
	}
	// The watcher read the working set at or over the threshold. A read
	// now may find it a little under again (a collector's saw-tooth at
	// the threshold), and the watcher tells only the next crossing it
	// sees: so the grace starts on the watcher's word, and its end reads
	// again.
	st, err := c.g.Stats()
	if err != nil {
		return
	}
	if c.sampler != nil {
		c.sampleOf(time.Now(), st, true)
	}
	grace := c.cfg.RestartAtGrace
	c.em.emit(Event{Kind: ThresholdCrossed, Pid: c.p.Pid, Usage: st.Current, WorkingSet: st.WorkingSet, Cache: st.Cache, Ceiling: st.Ceiling,
		Threshold: c.cfg.RestartAt, Restarts: c.restarts, Delay: grace, Diagnosis: c.diagnosis()})
	if grace <= 0 {
		c.memoryRestart(ReasonRestartAt, fmt.Sprintf("its working set reached %s, over --restart-at %s", size(st.WorkingSet), size(c.cfg.RestartAt)), st, time.Time{})
		return
	}
	now := time.Now()
	c.over = &overThreshold{end: now.Add(grace), tick: time.NewTimer(graceStepMin), points: []wsPoint{{now, st.WorkingSet}}, graceFor: grace}
}

// overCheck is one step of the grace.
func (c *child) overCheck(now time.Time) {
	o := c.over
	st, err := c.g.Stats()
	if err != nil {
		o.next(now, graceStepMax) // read again; the grace still ends on time
		return
	}
	o.add(now, st.WorkingSet)
	end, what := c.nearestEnd(st.Ceiling)
	rate, ok := o.rate()
	left, known := timeToEnd(st.WorkingSet, end, rate, ok)
	if !now.Before(o.end) {
		c.endOver()
		if st.WorkingSet >= c.cfg.RestartAt {
			// The evidence must not cost the restart here either: when
			// the end is in sight, it bounds the wait.
			var by time.Time
			if known {
				by = now.Add(left)
			}
			c.memoryRestart(ReasonRestartAt, fmt.Sprintf("its working set stayed over --restart-at %s for %s (now %s)",
				size(c.cfg.RestartAt), fmtDuration(o.graceFor), size(st.WorkingSet)), st, by)
			return
		}
		c.cfg.Log.Info("restart-at: the working set fell back under the threshold within the grace; not restarting",
			"run", c.cfg.Name, "working_set", st.WorkingSet, "threshold", c.cfg.RestartAt, "grace", o.graceFor)
		return
	}
	if !known {
		o.inReach = 0
		if ok {
			o.next(now, graceStepMax) // flat or falling
		} else {
			o.next(now, graceStepMin) // no rate yet
		}
		return
	}
	if now.Add(left).After(o.end) {
		o.inReach = 0
		o.next(now, left/4)
		return
	}
	if o.inReach++; o.inReach < projectionsToAct {
		o.next(now, left/4)
		return
	}
	c.endOver()
	c.memoryRestart(ReasonRestartAt, fmt.Sprintf("its working set, %s over --restart-at %s, grows %s: it would reach %s in %s, before the %s grace ends",
		size(st.WorkingSet), size(c.cfg.RestartAt), leakRateString(rate), what, fmtDuration(left), fmtDuration(o.graceFor)), st, now.Add(left))
}

// timeToEnd is how long the working set ws takes to reach end at rate
// (bytes a second; ok when there is one): 0 when it is there already (past
// a heap's estimated end); not known with no end, no rate yet, or a flat
// or falling one.
func timeToEnd(ws, end uint64, rate float64, ok bool) (time.Duration, bool) {
	switch {
	case end != 0 && ws >= end:
		return 0, true
	case !ok || rate <= 0 || end == 0:
		return 0, false
	}
	return time.Duration(float64(end-ws) / rate * float64(time.Second)), true
}

// nearestEnd is the working set at which the child would die first, and
// its name: the kernel's ceiling, or, for a runtime whose heap limit
// guardrun set, that heap's end (its limit and runtimeFloor) when it
// comes sooner. 0 when there is neither.
func (c *child) nearestEnd(ceiling uint64) (uint64, string) {
	end, what := ceiling, "the "+size(ceiling)+" ceiling"
	if h := c.heap.limit; h > 0 && (c.heap.runtime == "node" || c.heap.runtime == "jvm") && (end == 0 || h+runtimeFloor < end) {
		end, what = h+runtimeFloor, fmt.Sprintf("the end of its %s heap (from about %s of working set)", size(h), size(h+runtimeFloor))
	}
	return end, what
}

// next sets the next step of the grace, d from now, between graceStepMin
// and graceStepMax and never past the grace's end.
func (o *overThreshold) next(now time.Time, d time.Duration) {
	d = min(max(d, graceStepMin), graceStepMax)
	o.tick.Reset(max(min(d, o.end.Sub(now)), 0))
}

func (o *overThreshold) add(now time.Time, ws uint64) {
	o.points = append(o.points, wsPoint{now, ws})
	i := 0
	for i < len(o.points)-3 && now.Sub(o.points[i].t) > trendSpan {
		i++
	}
	o.points = o.points[i:]
}

// rate is the working set's growth in bytes per second over the recent
// points: from the first to the last, once three or more are there.
func (o *overThreshold) rate() (float64, bool) {
	if len(o.points) < 3 {
		return 0, false
	}
	a, b := o.points[0], o.points[len(o.points)-1]
	dt := b.t.Sub(a.t).Seconds()
	if dt <= 0 {
		return 0, false
	}
	return (float64(b.ws) - float64(a.ws)) / dt, true
}

// endOver ends a grace period in progress.
func (c *child) endOver() {
	if c.over != nil {
		c.over.tick.Stop()
		c.over = nil
	}
}

// restartPlan is a memory restart with its evidence gathered.
type restartPlan struct {
	reason string
	event  Event
	report *RuntimeReport
}

// memoryRestart stops the child to restart it before the ceiling, once
// the evidence is in: the runtime's own report of its heap and stack
// (Node.js, when guardrun set its report flags) and the --before-stop
// hook, both bounded, gathered off the loop so that signals and reaping
// go on meanwhile. by is when the ceiling is expected, if known: the
// evidence must not cost the graceful restart.
func (c *child) memoryRestart(reason, detail string, st cgroup.Stats, by time.Time) {
	if c.busy() {
		return
	}
	c.pending = reason
	wait := evidenceWait
	if !by.IsZero() {
		wait = min(wait, time.Until(by)/2)
	}
	e := Event{Kind: MemoryRestart, Pid: c.p.Pid, Usage: st.Current, WorkingSet: st.WorkingSet, Cache: st.Cache, Ceiling: st.Ceiling,
		Threshold: c.cfg.RestartAt, Restarts: c.restarts, Reason: reason, Detail: detail}
	pids, _ := c.g.Procs()
	ch := make(chan restartPlan, 1)
	c.acting = ch
	ask := c.heap.asks()
	hook := c.cfg.BeforeStop
	dir, path := c.heap.dir, c.g.Path()
	go func() {
		plan := restartPlan{reason: reason, event: e}
		var wg sync.WaitGroup
		if ask {
			wg.Go(func() { plan.report = requestNodeReport(dir, pids, wait, "") })
		}
		if hook != "" {
			wg.Go(func() { c.beforeStop(e, path) })
		}
		wg.Wait()
		ch <- plan
	}()
}

// act sends the stop signal of a memory restart whose evidence is in,
// unless the child was asked to stop meanwhile.
func (c *child) act(plan restartPlan) {
	c.pending = ""
	if c.r.Asked || c.r.Reason != "" {
		return
	}
	if c.sampler != nil {
		c.sample()
	}
	e := plan.event
	e.Time = time.Time{}
	if e.Diagnosis = c.diagnosis(); e.Diagnosis == nil && plan.report != nil {
		e.Diagnosis = &Diagnosis{}
	}
	if plan.report != nil {
		e.Diagnosis.Runtime = plan.report
	}
	c.em.emit(e)
	c.stop(stopSignal(c.cfg), plan.reason)
}

func size(b uint64) string { return cgroup.FormatSize(b) }
