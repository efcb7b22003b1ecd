package supervise

import (
	"path/filepath"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/proc"
	"golang.org/x/sys/unix"
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
	// The sample's largest processes (sampler.top) are among the pids
	// the same sample saw: the last sample's pids hold every process a
	// kill since could have taken.
	pids := append([]int{c.r.Pid}, c.seen...)
	var recs []oomRecord
	if c.r.Backend != "none" { // without a cgroup guardrun's sampler killed, not the kernel
		recs = oomRecords(c.cfg.Name, c.kmsgSince, pids, n)
	}
	for i := range n {
		diag := c.diagnosis()
		e := Event{Kind: OOMKill, Pid: c.r.Pid, Usage: st.Current, WorkingSet: st.WorkingSet, Cache: st.Cache, Ceiling: st.Ceiling, Peak: st.Peak,
			Restarts: c.restarts, Killer: c.r.oomWho(), Diagnosis: diag}
		switch {
		case i < len(recs):
			v := recs[i].victim
			e.Victim = &v
			if diag != nil {
				diag.OOMReport = recs[i].line
			}
			c.kmsgSince = recs[i].usec + 1
		case i == n-1:
			e.Victim = c.mainVictim(exiting, recs)
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

// mainVictim is the main child when it was the victim of a kill the
// kernel's log did not name (no /dev/kmsg in a container; its summary
// rate-limited and the victim not one guardrun's samples saw), and nil
// when that was a worker no one can name: a wrong "api was killed" for a
// worker's death is the verdict that makes an operator distrust the rest.
// The main child was the victim when it died of it (the exit's cause),
// when guardrun's own sampler killed (the none backend kills the whole
// tree), or when it is dying now of a SIGKILL guardrun did not send:
// pending, or its exit status already (a child that merely exits is no
// victim). The kernel counts the kill a moment before it sends the
// signal, so a child found alive is looked at twice more, 2 ms apart; one
// alive then was not the victim, and the kill stays unnamed, which is
// never wrong. Its command is its comm while /proc has it.
func (c *child) mainVictim(exiting bool, recs []oomRecord) *cgroup.Proc {
	for _, r := range recs {
		if r.victim.Pid == c.r.Pid {
			return nil
		}
	}
	v := &cgroup.Proc{Pid: c.r.Pid, Command: filepath.Base(c.cfg.Command[0])}
	switch {
	case exiting:
		if c.r.Cause != CauseOOMKill {
			return nil
		}
		return v // reaped: /proc has it no more
	case c.r.Backend == "none":
		if st, err := proc.ReadStat(c.r.Pid); err == nil {
			v.Command = st.Comm
		}
		return v
	case c.busy():
		return nil // guardrun is stopping it: its death says nothing
	}
	for try := 0; ; try++ {
		st, err := proc.ReadStat(c.r.Pid)
		if err == nil {
			v.Command = st.Comm
			if st.KilledBy(unix.SIGKILL) {
				return v
			}
		}
		if s, err := proc.ReadStatus(c.r.Pid); err == nil && s.Pending(unix.SIGKILL) {
			return v
		}
		if try == 2 {
			return nil
		}
		time.Sleep(2 * time.Millisecond) // the moment between the count and the signal
	}
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
