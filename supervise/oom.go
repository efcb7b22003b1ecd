package supervise

import (
	"github.com/guardrun/guardrun/cgroup"
)

// oomKills tells the OOM kills in the group that are not told yet, one
// oom_kill event each, naming the process the kernel's line names: a
// worker killed while the master runs on is news the moment the kernel
// reports it, not when the service ends. It reports whether there were
// any. exiting is set once the child is reaped.
func (c *child) oomKills(st cgroup.Stats, exiting bool) bool {
	if st.OOMKills <= c.oomSeen {
		return false
	}
	n := int(st.OOMKills - c.oomSeen)
	c.oomSeen = st.OOMKills
	pids := []int{c.r.Pid}
	if c.sampler != nil {
		for _, p := range c.sampler.top {
			pids = append(pids, p.Pid)
		}
	}
	var recs []oomRecord
	if c.r.Backend != "none" { // without a cgroup guardrun's sampler killed, not the kernel
		recs = oomRecords(c.cfg.Name, c.kmsgSince, pids, n)
	}
	for i := range n {
		diag := c.diagnosis()
		e := Event{Kind: OOMKill, Pid: c.r.Pid, Usage: st.Current, WorkingSet: st.WorkingSet, Cache: st.Cache, Ceiling: st.Ceiling, Peak: st.Peak,
			Restarts: c.restarts, Killer: c.r.oomWho(), Diagnosis: diag}
		if i < len(recs) {
			v := recs[i].victim
			e.Victim = &v
			if diag != nil {
				diag.OOMReport = recs[i].line
			}
			c.kmsgSince = recs[i].usec + 1
		}
		if exiting {
			// After the exit the group's figures are what was left: the
			// peak is the figure of the kill, and the working set and
			// cache of that moment are not known any more.
			e.Usage, e.WorkingSet, e.Cache = st.Peak, 0, 0
		}
		c.em.emit(e)
	}
	return true
}

// heapDeaths tells the heap deaths the runtime's reports show that are
// not told yet: a heap_oom event each. Node.js writes its report (under
// --report-on-fatalerror, which guardrun adds with the heap hint) before
// it aborts, so a worker's death is seen at the next sample and the
// child's own at its exit, when the report decides its cause.
func (c *child) heapDeaths() {
	if c.heap.dir == "" {
		return
	}
	if c.heapSeen == nil {
		c.heapSeen = map[string]bool{}
	}
	for _, path := range nodeReports(c.heap.dir) {
		if c.heapSeen[path] {
			continue
		}
		rep, err := readNodeReport(path)
		if err != nil {
			continue // still being written: the next look reads it
		}
		c.heapSeen[path] = true
		if isHeapOOM(rep) {
			c.heapDeath(rep)
			removeReport(path)
		}
		// Any other report is one a memory restart asked for
		// (requestNodeReport reads and removes it), or the user's.
	}
	if pid, ok := jvmHeapOOM(c.heap.dir); ok && !c.heapSeen["jvm"] {
		c.heapSeen["jvm"] = true
		c.heapDeath(&RuntimeReport{Runtime: "jvm", Pid: pid, Event: "java.lang.OutOfMemoryError", HeapLimit: c.heap.limit})
	}
}

func (c *child) heapDeath(rep *RuntimeReport) {
	// The limit guardrun set is the one to name: V8's own figure adds
	// the young generation (48 MiB) to --max-old-space-size.
	if c.heap.limit > 0 {
		rep.HeapLimit = c.heap.limit
	}
	if c.r.Heap == nil || rep.Pid == c.r.Pid {
		c.r.Heap = rep
	}
	st, _ := c.g.Stats()
	diag := c.diagnosis()
	if diag == nil {
		diag = &Diagnosis{}
	}
	diag.Runtime = rep
	c.em.emit(Event{Kind: HeapOOM, Pid: c.r.Pid, Usage: st.Current, WorkingSet: st.WorkingSet, Cache: st.Cache, Ceiling: st.Ceiling, Peak: st.Peak,
		Restarts: c.restarts, HeapSizing: c.heap.sizing, Diagnosis: diag})
}
