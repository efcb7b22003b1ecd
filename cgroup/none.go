package cgroup

import (
	"cmp"
	"maps"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/guardrun/guardrun/internal/proc"
	"golang.org/x/sys/unix"
)

// noneSample is how often the no-cgroup backend reads the tree's RSS. It is
// the whole of its enforcement, so it is frequent; a sample reads only the
// tree's own /proc files and guardrun's (scanTree): about 110 µs for a
// child and a grandchild of a few threads each, with 100 or 2,000 other
// processes on the host alike (scripts/bench.d/none-scaling).
const noneSample = 100 * time.Millisecond

// noneGroup enforces a ceiling without a cgroup, as well as user space can:
// it samples the resident memory of the child and all its descendants and
// SIGKILLs the tree when the sum passes the ceiling. A fast allocator can
// overshoot between samples, memory the kernel charges elsewhere (page
// cache, kernel memory) is not counted, and a process that leaves the tree
// between two samples escapes the ceiling: one reparented to init always
// (double fork while guardrun is not a subreaper), one reparented to
// guardrun as a subreaper only in the case adopted misses.
type noneGroup struct {
	Reason string // why no cgroup is used; the supervisor prints it
	max    uint64

	mu sync.Mutex
	// tree holds the child and every descendant seen so far, each with its
	// start time (clock ticks since boot), so a pid the kernel hands to an
	// unrelated process after ours exited is never counted or killed.
	tree      map[int]uint64
	child     int  // the child's pid, at the root of tree
	subreaper bool // guardrun is a child subreaper: the tree's orphans come to it
	session   int  // guardrun's session id, which its own children share
	s         Stats
	stop      chan struct{}
	done      chan struct{}
	limit     bool // the ceiling was hit and the tree killed

	watcher   *Watcher // Watch: nil when nothing watches
	threshold uint64   // Watch: Threshold when RSS crosses this upward
	over      bool     // RSS was at or over threshold at the last sample
	oom       bool     // Watch: OOMKill when the sampler kills the tree
}

func openNone(o Options, reason string) Group {
	return &noneGroup{Reason: reason, max: o.Limits.Ceiling, tree: map[int]uint64{}}
}

// NoCgroupReason returns why g enforces no cgroup, or "" for a real group.
func NoCgroupReason(g Group) string {
	if n, ok := g.(*noneGroup); ok {
		return n.Reason
	}
	return ""
}

func (g *noneGroup) Backend() string { return "none" }
func (g *noneGroup) Path() string    { return "" }

func (g *noneGroup) Start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	g.mu.Lock()
	g.tree = map[int]uint64{}
	g.child = cmd.Process.Pid
	if p, err := proc.ReadStat(g.child); err == nil {
		g.tree[g.child] = p.StartTime
	}
	// The supervisor becomes a subreaper, if at all, before it starts a
	// child (supervise.Run, --init).
	var reaper int32
	unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&reaper)), 0, 0, 0)
	g.subreaper = reaper != 0
	g.session, _ = unix.Getsid(0)
	g.s = Stats{Ceiling: g.max}
	g.mu.Unlock()
	g.stop, g.done = make(chan struct{}), make(chan struct{})
	go g.watch()
	return nil
}

func (g *noneGroup) watch() {
	defer close(g.done)
	t := time.NewTicker(noneSample)
	defer t.Stop()
	for {
		g.sample()
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
	}
}

// sample refreshes the tree from /proc and sums its RSS.
func (g *noneGroup) sample() {
	g.mu.Lock()
	known := maps.Clone(g.tree)
	child, adopt, session := g.child, g.subreaper, g.session
	g.mu.Unlock()
	procs := scanTree(known, child, adopt, session)
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.tree)
	var rss uint64
	for pid, p := range procs {
		g.tree[pid] = p.StartTime
		rss += p.RSS
	}
	if g.watcher != nil && g.threshold > 0 {
		over := rss >= g.threshold
		if over && !g.over {
			g.watcher.send(Threshold)
		}
		g.over = over
	}
	// Without a cgroup there is no page cache to tell apart: RSS is all
	// guardrun sees, and all of it counts.
	g.s.Current, g.s.WorkingSet = rss, rss
	g.s.Peak = max(g.s.Peak, rss)
	if g.max > 0 && rss > g.max && !g.limit {
		g.limit = true
		g.s.OOMKills++
		g.killLocked()
		// Sent after the count: Stats, which waits for mu, shows it.
		if g.watcher != nil && g.oom {
			g.watcher.send(OOMKill)
		}
	}
}

// scanTree reads the tree as it is now, starting from the tree as last
// seen (known: pid to start time, the child among them), and reads no
// other process's files:
//   - every known process that is still the same process (same start
//     time: a pid the kernel gave to an unrelated process is not ours),
//     with all its descendants (proc.Tree). A known process keeps its
//     place after its parent dies and it is reparented out of the tree;
//   - when adopt (guardrun is a child subreaper, --init), the orphans the
//     kernel reparented to guardrun from the tree since the last sample,
//     with their descendants: see adopted.
//
// A zombie is left out: it is dead and holds no memory, and it is in
// its parent's children file only until the parent reaps it.
//
// A sample so costs the tree's own files (a stat each, and a children
// file per thread, most of the cost) and guardrun's children files, flat
// in the number of processes on the host (scripts/bench.d/none-scaling).
// It used to read /proc/N/stat of every process on the host to find the
// tree by ppid, which grew with the host: measured on the same machine,
// 2 ms a sample with 90 processes, 50 ms with 2,000, half a CPU at
// noneSample.
func scanTree(known map[int]uint64, child int, adopt bool, session int) map[int]proc.Stat {
	procs := make(map[int]proc.Stat, len(known)+1)
	walk := func(root proc.Stat) {
		procs[root.Pid] = root
		tree, _ := proc.Tree(root.Pid)
		for _, pid := range tree {
			if _, seen := procs[pid]; seen {
				continue // root, or walked from another root
			}
			if p, err := proc.ReadStat(pid); err == nil && p.State != 'Z' {
				procs[pid] = p
			}
		}
	}
	from := func(pid int, start uint64) {
		if _, seen := procs[pid]; seen {
			return
		}
		if p, err := proc.ReadStat(pid); err == nil && p.StartTime == start && p.State != 'Z' {
			walk(p)
		}
	}
	// The child first: its walk takes in all of the tree still joined to
	// it, and the other known roots are then found seen.
	if start, ok := known[child]; ok {
		from(child, start)
	}
	for pid, start := range known {
		from(pid, start)
	}
	if !adopt {
		return procs
	}
	self := os.Getpid()
	kids, _ := proc.Children(self)
	for _, pid := range kids {
		if _, seen := procs[pid]; seen {
			continue
		}
		if p, err := proc.ReadStat(pid); err == nil && p.State != 'Z' && adopted(p, self, child, session) {
			walk(p)
		}
	}
	return procs
}

// adopted reports whether p, a child of guardrun (pid self, in session)
// not yet in the tree, is an orphan of the tree that the kernel
// reparented to guardrun, its child subreaper. guardrun starts every
// process of its own (the child, a hook, a before-stop command) with
// Setpgid, so each leads a group of its own, and the child's descendants
// stay in the child's group unless they move. So p is the tree's when it
// is in the child's group, or when it left guardrun's session (setsid(2):
// a daemon double-forked out of the tree), which no process guardrun
// starts for itself does. Missed: an orphan that moved to a group of its
// own in guardrun's session (a job-control shell's background job) and
// lost its parent within one sample. Counted wrongly: a daemon that a
// hook double-forks.
func adopted(p proc.Stat, self, child, session int) bool {
	return p.PPid == self && p.Pid != child && (p.PGrp == child || p.Session != session)
}

// Proc is one process and its resident size.
type Proc struct {
	Pid     int    `json:"pid"`
	Command string `json:"command"` // the kernel's comm
	RSS     uint64 `json:"rss"`
}

// Largest returns the n processes of pids with the most resident memory,
// largest first; processes that are gone are left out.
func Largest(pids []int, n int) []Proc {
	var ps []Proc
	for _, pid := range pids {
		if p, err := proc.ReadStat(pid); err == nil {
			ps = append(ps, Proc{Pid: pid, Command: p.Comm, RSS: p.RSS})
		}
	}
	slices.SortFunc(ps, func(a, b Proc) int {
		if c := cmp.Compare(b.RSS, a.RSS); c != 0 {
			return c
		}
		return cmp.Compare(a.Pid, b.Pid)
	})
	return ps[:min(len(ps), n)]
}

func (g *noneGroup) Stats() (Stats, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.s, nil
}

func (g *noneGroup) Kill() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.killLocked()
	return nil
}

// killLocked kills the tree, each pid only while it still names the
// process that joined the tree.
func (g *noneGroup) killLocked() {
	for pid, start := range g.tree {
		if p, err := proc.ReadStat(pid); err == nil && p.StartTime == start {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func (g *noneGroup) Remove() error {
	if g.stop != nil {
		close(g.stop)
		<-g.done
		g.stop = nil
	}
	g.sample()
	return g.Kill()
}

func (g *noneGroup) Procs() ([]int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	pids := make([]int, 0, len(g.tree))
	for pid := range g.tree {
		pids = append(pids, pid)
	}
	return pids, nil
}
