package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"golang.org/x/sys/unix"
)

// runChild runs one child in a group of its own, from start to reaping,
// and removes the group. Each child gets a fresh group, so its peak and
// OOM counters are its own.
func (s *supervisor) runChild() (*Result, error) {
	cfg, log := s.cfg, s.cfg.Log
	g := s.next
	s.next = nil
	if g == nil {
		var err error
		if g, err = cgroup.Open(cgroup.Options{Name: cfg.Name, Backend: cfg.Backend, Limits: cfg.Limits, Held: s.hold}); err != nil {
			return nil, err
		}
	}
	// Named before the child starts: nothing it forks is unaccounted for.
	s.sen.watch(g)
	defer g.Remove()
	if why := cgroup.NoCgroupReason(g); why != "" && s.restarts == 0 {
		log.Warn("no cgroup: the ceiling is enforced best-effort by sampling RSS, and a fast leak can overshoot it", "run", cfg.Name, "why", why)
	}
	ceiling := cfg.Limits.Ceiling
	encl, enclosed := cgroup.Enclosing(g)
	if enclosed {
		ceiling = encl.ChildCeiling()
		if s.restarts == 0 {
			logEnclosure(log, cfg.Name, encl)
		}
	}
	w, err := armWatch(g, cfg)
	if err != nil {
		return nil, err
	}
	defer w.Close()

	cmd, tty := command(cfg)
	started, since := time.Now(), monotonicUsec()
	if err := startIn(g, cmd, cfg); err != nil {
		return nil, &StartError{Command: cfg.Command[0], Err: err}
	}
	s.em.emit(Event{Kind: Started, Pid: cmd.Process.Pid, Ceiling: ceiling, Restarts: s.restarts, Backend: g.Backend(), Cgroup: g.Path(), HeapHint: s.hints, HeapSizing: s.heap.sizing})
	s.hints = ""

	r := &Result{Name: cfg.Name, Backend: g.Backend(), Path: g.Path(), Pid: cmd.Process.Pid, Restarts: s.restarts, Sampled: enclosed && encl.Sampled()}
	c := &child{supervisor: s, g: g, p: cmd.Process, r: r, kmsgSince: since, started: started}
	if w != nil {
		c.notices = w.C
	}
	if cfg.Sentinel && !s.senTried && g.Backend() != "none" {
		c.sentinelDue = time.After(sentinelAfter)
	}
	if cfg.Sample > 0 {
		c.sampler = &sampler{every: cfg.Sample}
		if cfg.LeakWindow > 0 {
			// Per child: a restart's start-up ramp is a new warm-up.
			c.leaks = newLeakDetector(cfg.LeakWindow, cfg.Limits.Ceiling)
		}
		c.sample()
		t := time.NewTicker(cfg.Sample)
		defer t.Stop()
		c.samples = t.C
	}
	c.supervise()
	c.drain()
	r.Duration = time.Since(started)
	// guardrun reaps with wait4, not Process.Wait, so the pidfd os/exec
	// holds would stay open until a garbage collection finalised it; over
	// thousands of restarts that is a pile of fds. The child is reaped:
	// let it go now.
	cmd.Process.Release()
	if tty >= 0 {
		reclaimTTY(tty)
	}
	// Counters are read before the group goes: removing it loses them.
	if r.Stats, err = g.Stats(); err != nil {
		log.Warn("read cgroup counters", "run", cfg.Name, "err", err)
	}
	r.classify()
	// What the kernel killed and the runtime said, before the group and
	// the processes' traces go: OOM kills not yet told (the child itself,
	// or a kill no notice reached), then heap deaths from the runtime's
	// reports.
	c.oomKills(r.Stats, true)
	c.heapDeaths()
	if r.Heap != nil {
		r.HeapSetting = s.heap.words()
		if r.Heap.Pid == r.Pid && r.Cause != CauseOOMKill {
			r.Cause = CauseHeapOOM
		}
	}
	// The child is gone; what it left behind in its group goes with it.
	if err := g.Remove(); err != nil {
		log.Warn("remove cgroup", "run", cfg.Name, "path", g.Path(), "err", err)
	} else {
		s.sen.clear()
	}
	s.total.add(r)
	r.Run = s.total
	var diag *Diagnosis
	if r.ExitCode != 0 && r.Cause != CauseOOMKill && r.Cause != CauseHeapOOM {
		diag = c.diagnosis()
	}
	e := r.exited()
	e.Diagnosis = diag
	s.em.emit(e)
	return r, nil
}

// logEnclosure says once what a run in a container's own group gets: a
// Warn when memory.oom.group there will take guardrun with the child.
func logEnclosure(log *slog.Logger, name string, e cgroup.Enclosure) {
	level := slog.LevelInfo
	if e.OOMGroup {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, e.String(), "run", name, "path", e.Dir, "why", e.Why)
	for _, n := range e.Notes() {
		log.Warn(n, "run", name)
	}
}

// armWatch arms the group's watches: OOM kills always (the kernel tells
// each one while the child lives, so a worker's death is news at once,
// not when the service ends), the --restart-at threshold and the PSI
// trigger when asked. A watch that only serves OOM kills and fails is a
// warning, not a failure: the exit still reads the counters.
func armWatch(g cgroup.Group, cfg Config) (*cgroup.Watcher, error) {
	spec := cgroup.WatchSpec{Threshold: cfg.RestartAt, Trigger: cfg.Pressure, OOM: true}
	w, err := g.Watch(spec)
	if err == nil || cfg.RestartAt > 0 || cfg.Pressure != "" {
		return w, err
	}
	cfg.Log.Warn("no live OOM watch: OOM kills in the group are told when the child ends", "run", cfg.Name, "err", err)
	return nil, nil
}

// command builds the child. It gets its own process group, so a signal
// guardrun forwards is not doubled by one the terminal sends to guardrun's
// group; and when guardrun owns the terminal's foreground, the child gets
// it, so Ctrl-C, Ctrl-Z and full-screen programs work as if bare. tty is
// the terminal fd handed over, or -1.
func command(cfg Config) (cmd *exec.Cmd, tty int) {
	cmd = exec.Command(cfg.Command[0], cfg.Command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = orFile(cfg.Stdin, os.Stdin), orFile(cfg.Stdout, os.Stdout), orFile(cfg.Stderr, os.Stderr)
	cmd.Env, cmd.Dir = cfg.Env, cfg.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If guardrun dies, even by SIGKILL, the child must not live on.
		Pdeathsig:  unix.SIGKILL,
		Credential: cfg.Credential,
	}
	tty = -1
	if in, ok := cmd.Stdin.(*os.File); ok {
		if pg, err := unix.IoctlGetInt(int(in.Fd()), unix.TIOCGPGRP); err == nil && pg == unix.Getpgrp() {
			cmd.SysProcAttr.Foreground = true
			cmd.SysProcAttr.Ctty = 0
			tty = int(in.Fd())
		}
	}
	return cmd, tty
}

func orFile(f, def *os.File) *os.File {
	if f != nil {
		return f
	}
	return def
}

// reclaimTTY takes the terminal's foreground back from the finished child,
// so guardrun's last line is not stopped by SIGTTOU.
func reclaimTTY(fd int) {
	signal.Ignore(unix.SIGTTOU)
	defer signal.Reset(unix.SIGTTOU)
	unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, unix.Getpgrp())
}

// child is one running child and what its supervision has seen.
type child struct {
	*supervisor
	g       cgroup.Group
	p       *os.Process
	r       *Result
	started time.Time
	notices <-chan cgroup.Notice

	deadline <-chan time.Time // the stop timeout, once stopping
	lastPSI  time.Time        // the latest pressure notice
	over     *overThreshold   // the working set is over --restart-at: the grace runs
	acting   <-chan restartPlan
	// pending is a memory restart waiting for its evidence (a runtime
	// report, --before-stop): "" when none.
	pending string

	sampler     *sampler         // nil: nothing asked for a diagnosis
	samples     <-chan time.Time // its ticker
	oomSeen     uint64           // OOM kills in the group told so far
	seen        []int            // the group's processes at the last sample: an unnamed kill's candidates
	kmsgSince   uint64           // kmsg records before this are told or older than the child
	heapSeen    map[string]bool  // runtime reports already told
	detailAt    time.Time        // the last sample with memory.stat and processes
	detailUsage uint64           // the working set then
	leaks       *leakDetector    // nil: no leak forecast
	sentinelDue <-chan time.Time // when to start the run's sentinel
}

// detailEvery is how often a sample also reads memory.stat and each
// process's RSS for a diagnosis: a couple of cgroup files per second cost
// next to nothing, one /proc file per process of a large tree does not.
// Events that carry a diagnosis take a full sample of their own first.
const detailEvery = 5 * time.Second

// leakCheck feeds the leak forecast the working set: page cache that the
// kernel reclaims before any OOM kill is not a leak.
func (c *child) leakCheck(now time.Time, st cgroup.Stats) {
	if c.leaks == nil {
		return
	}
	if l, ok := c.leaks.add(Sample{Time: now, Usage: st.WorkingSet}); ok {
		c.em.emit(Event{Kind: LeakSuspected, Time: now, Pid: c.p.Pid, Usage: st.Current, WorkingSet: l.Usage, Cache: st.Cache, Ceiling: l.Ceiling,
			Rate: l.Rate, Left: l.Left, Restarts: c.restarts, Detail: l.String(), Diagnosis: c.diagnosis()})
	}
}

// moved reports whether the working set changed by more than an eighth
// since the last detailed sample: a group that grows fast is heading for
// an incident, and its diagnosis must show the processes as they were
// just before, not five seconds before.
func moved(was, now uint64) bool {
	d := max(was, now) - min(was, now)
	return d > max(was, now)/8
}

// sample records the group's usage for the timeline (a Sampled event and
// the leak detector) and, at most every detailEvery or when full is set,
// its memory.stat and largest processes for a diagnosis.
func (c *child) sample() { c.sampleAt(time.Now(), true) }

func (c *child) sampleAt(now time.Time, full bool) {
	if st, err := c.g.Stats(); err == nil {
		c.sampleOf(now, st, full)
	}
}

// sampleOf is sampleAt with the group's figures just read: an incident
// that read them does not read the group a second time.
func (c *child) sampleOf(now time.Time, st cgroup.Stats, full bool) {
	pids, _ := c.g.Procs()
	if len(pids) == 0 {
		// The child is dead and not reaped yet: a sample now would show
		// the aftermath, not what led to it, so the one before stays
		// the last.
		return
	}
	// A kill no notice told (no live watch, or a coalesced one) is told
	// now; the sample goes on, since the service may well run on.
	killed := c.oomKills(st, false)
	c.seen = pids // after: a kill since the last sample is of one seen there
	c.em.emit(Event{Kind: Sampled, Time: now, Pid: c.p.Pid, Usage: st.Current, WorkingSet: st.WorkingSet, Cache: st.Cache, Peak: st.Peak, Ceiling: st.Ceiling, Restarts: c.restarts})
	c.leakCheck(now, st)
	c.heapDeaths()
	if killed || (!full && now.Sub(c.detailAt) < detailEvery && !moved(c.detailUsage, st.WorkingSet)) {
		// Right after a kill the processes and memory.stat are the
		// aftermath: the detail before it stays the diagnosis.
		c.sampler.record(now, st)
		return
	}
	c.detailAt, c.detailUsage = now, st.WorkingSet
	c.sampler.sample(now, st, pids, st.MemoryStat)
}

// diagnosis is what the last sample saw; nil without sampling. Callers
// with a live child sample first.
func (c *child) diagnosis() *Diagnosis {
	if c.sampler == nil {
		return nil
	}
	return &Diagnosis{MemoryStat: c.sampler.stat, Top: slices.Clone(c.sampler.top), Growth: slices.Clone(c.sampler.growth)}
}

// pressureQuiet ends a pressure episode: a PSI trigger fires at most once
// per window for as long as the stall lasts, and one event per episode is
// what a person wants to read, not one per window.
const pressureQuiet = 10 * time.Second

// supervise is tini's wait_and_forward_signal and reap_zombies, plus the
// watches: it forwards signals, runs the stop sequence, restarts before the
// ceiling, reaps, and returns when the child is gone.
func (c *child) supervise() {
	done := c.ctx.Done()
	c.answerRestarts()
	var every <-chan time.Time
	if d := c.cfg.RestartEvery; d > 0 {
		t := time.NewTimer(scheduleDelay(d, nil) - time.Since(c.started))
		defer t.Stop()
		every = t.C
	}
	chld := false // the last thing read was a SIGCHLD
	for {
		if st, ok := reap(c.p.Pid, c.cfg.Init); ok {
			c.r.Status = st
			c.settle(chld)
			return
		}
		chld = false
		var overTick <-chan time.Time
		if c.over != nil {
			overTick = c.over.tick.C
		}
		select {
		case sig := <-c.sigs:
			switch sig {
			case unix.SIGCHLD:
				chld = true
			case unix.SIGTERM:
				c.stop(stopSignal(c.cfg), "")
			case unix.SIGINT:
				c.stop(unix.SIGINT, "")
			default:
				c.signal(sig.(syscall.Signal))
			}
		case <-done:
			done = nil
			c.stop(stopSignal(c.cfg), "")
		case <-c.deadline:
			c.deadline = nil
			c.cfg.Log.Warn("stop timeout: killing the group", "run", c.cfg.Name, "timeout", c.cfg.StopTimeout)
			c.kill()
		case n := <-c.notices:
			c.notice(n)
		case now := <-overTick:
			c.overCheck(now)
		case plan := <-c.acting:
			c.acting = nil
			c.act(plan)
		case <-c.sentinelDue:
			c.sentinelDue = nil
			c.ensureSentinel(c.g)
		case now := <-c.samples:
			c.sampleAt(now, false)
		case req := <-c.cfg.Control:
			c.request(req)
		case <-every:
			every = nil
			c.scheduled()
		}
	}
}

// settleAfter bounds settle's wait: for the SIGCHLD of the child's death,
// which is on its way unless the signal channel overflowed and dropped
// it, and after a death by an unasked stop signal, for guardrun's own.
const settleAfter = 100 * time.Millisecond

// settle takes the stop a child's death may have overtaken. systemd stops
// a unit by signalling the main process and then every process of the
// unit at once, so the child can die of that TERM, and guardrun reap it,
// before guardrun has read its own TERM: the death is still the stop
// systemd asked for, not a child killed from outside (which would end
// guardrun with a plain 143, a failed unit, or restart the child).
//
// A signal the kernel handed guardrun before the child's SIGCHLD is
// mostly ahead of that SIGCHLD on the channel (the kernel hands out the
// lower signal first), so reading up to the SIGCHLD finds it; chld says
// that SIGCHLD was the last thing read. But two of guardrun's threads
// can take the two signals at once and hand them on in either order (1
// in 30 in the TCG VM), so after a death by TERM or INT that nobody asked
// guardrun for, settle waits up to settleAfter for guardrun's own: a
// child killed from outside is told 100 ms later, a stop is told right.
func (c *child) settle(chld bool) {
	switch {
	case c.r.Asked:
		return
	case c.r.Reason != "" || c.r.Forced:
		// guardrun stopped it itself (a memory, asked or scheduled
		// restart) or killed the group: its death is told. A stop that
		// came meanwhile is taken before a restart.
		c.takeQueuedStop()
		return
	}
	st := c.r.Status
	byStop := st.Signaled() && (st.Signal() == unix.SIGTERM || st.Signal() == unix.SIGINT || st.Signal() == stopSignal(c.cfg))
	if chld && !byStop {
		c.takeQueuedStop()
		return
	}
	t := time.NewTimer(settleAfter)
	defer t.Stop()
	for {
		select {
		case sig := <-c.sigs:
			switch sig {
			case unix.SIGCHLD:
				if !byStop {
					return
				}
			case unix.SIGTERM, unix.SIGINT:
				// The child is gone: nothing to signal, but the run ends
				// as asked. Other signals have no child to go to.
				c.r.Asked = true
				return
			}
		case <-t.C:
			return
		}
	}
}

// takeQueuedStop takes a TERM or INT already on the signal channel as the
// stop of a child that is gone.
func (c *child) takeQueuedStop() {
	for {
		select {
		case sig := <-c.sigs:
			if sig == unix.SIGTERM || sig == unix.SIGINT {
				c.r.Asked = true
				return
			}
		default:
			return
		}
	}
}

// stop starts the stop sequence: the signal now, the whole group at the
// stop timeout. reason is "" when guardrun was told to stop, or why
// guardrun itself stops the child to restart it.
func (c *child) stop(sig syscall.Signal, reason string) {
	switch {
	case reason != "" && (c.r.Asked || c.r.Reason != ""):
		return // already stopping; guardrun's own reasons do not escalate
	case reason == "" && c.r.Asked:
		// A second INT or TERM while stopping: the user means it now.
		c.cfg.Log.Warn("second stop request: killing the group", "run", c.cfg.Name)
		c.kill()
		return
	case reason == "":
		c.r.Asked = true
		c.em.emit(Event{Kind: Stopping, Pid: c.p.Pid, Restarts: c.restarts})
	default:
		c.r.Reason = reason
	}
	c.endOver()
	c.stopSignalGroup(sig)
	if c.deadline == nil {
		c.deadline = time.After(c.cfg.StopTimeout)
	}
}

func (c *child) kill() {
	c.r.Forced = true
	if err := c.g.Kill(); err != nil {
		c.cfg.Log.Error("kill group", "run", c.cfg.Name, "err", err)
	}
}

func (c *child) signal(sig syscall.Signal) {
	if err := c.p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.cfg.Log.Warn("forward signal", "pid", c.p.Pid, "signal", sig, "err", err)
	}
}

// notice handles what the group's watcher reports.
func (c *child) notice(n cgroup.Notice) {
	switch n {
	case cgroup.OOMKill:
		st, err := c.g.Stats()
		if err == nil {
			c.oomKills(st, false)
		}
	case cgroup.Threshold:
		c.crossed()
	case cgroup.Pressure:
		now := time.Now()
		ongoing := now.Sub(c.lastPSI) < pressureQuiet
		c.lastPSI = now
		if ongoing || c.busy() {
			return
		}
		st, _ := c.g.Stats()
		if c.sampler != nil {
			c.sampleOf(now, st, true)
		}
		c.em.emit(Event{Kind: PressureStall, Pid: c.p.Pid, Usage: st.Current, WorkingSet: st.WorkingSet, Cache: st.Cache, Ceiling: st.Ceiling, Restarts: c.restarts, Trigger: c.cfg.Pressure, Diagnosis: c.diagnosis()})
		if c.cfg.RestartOnPressure {
			c.memoryRestart(ReasonPressure, fmt.Sprintf("the --pressure trigger %q fired at a working set of %s", c.cfg.Pressure, cgroup.FormatSize(st.WorkingSet)), st, time.Time{})
		}
	}
}

// busy: the child is being stopped, or a memory restart is on its way.
func (c *child) busy() bool { return c.r.Asked || c.r.Reason != "" || c.pending != "" }

func stopSignal(cfg Config) syscall.Signal {
	if cfg.StopSignal == 0 {
		return unix.SIGTERM
	}
	return cfg.StopSignal
}
