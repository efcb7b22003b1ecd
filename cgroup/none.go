package cgroup

import (
	"bytes"
	"cmp"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// noneSample is how often the no-cgroup backend reads the tree's RSS. It is
// the whole of its enforcement, so it is frequent; reading /proc/*/stat for
// a few hundred processes costs well under a millisecond.
const noneSample = 100 * time.Millisecond

// noneGroup enforces a ceiling without a cgroup, as well as user space can:
// it samples the resident memory of the child and all its descendants and
// SIGKILLs the tree when the sum passes the ceiling. A fast allocator can
// overshoot between samples, memory the kernel charges elsewhere (page
// cache, kernel memory) is not counted, and a process that escapes the tree
// (double fork while guardrun is not a subreaper) escapes the ceiling.
type noneGroup struct {
	Reason string // why no cgroup is used; the supervisor prints it
	max    uint64

	mu sync.Mutex
	// tree holds the child and every descendant seen so far, each with its
	// start time (clock ticks since boot), so a pid the kernel hands to an
	// unrelated process after ours exited is never counted or killed.
	tree  map[int]uint64
	s     Stats
	stop  chan struct{}
	done  chan struct{}
	limit bool // the ceiling was hit and the tree killed

	watcher   *Watcher // Watch: nil when nothing watches
	threshold uint64   // Watch: Threshold when RSS crosses this upward
	over      bool     // RSS was at or over threshold at the last sample
	oom       bool     // Watch: OOMKill when the sampler kills the tree
}

func openNone(o Options, reason string) Group {
	return &noneGroup{Reason: reason, max: o.Limits.Max, tree: map[int]uint64{}}
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
	if p, ok := readProc(cmd.Process.Pid); ok {
		g.tree[cmd.Process.Pid] = p.start
	}
	g.s = Stats{Limit: g.max}
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
	procs := readProcs()
	g.mu.Lock()
	defer g.mu.Unlock()
	// Grow the tree to a fixed point: a new grandchild may be listed
	// before its parent in /proc order.
	for pid, start := range g.tree {
		if p, ok := procs[pid]; !ok || p.start != start {
			delete(g.tree, pid)
		}
	}
	for grown := true; grown; {
		grown = false
		for pid, p := range procs {
			if _, in := g.tree[pid]; in {
				continue
			}
			if _, parentIn := g.tree[p.ppid]; parentIn {
				g.tree[pid] = p.start
				grown = true
			}
		}
	}
	var rss uint64
	for pid := range g.tree {
		rss += procs[pid].rss
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

type procInfo struct {
	comm       string
	ppid       int
	start, rss uint64
}

func readProcs() map[int]procInfo {
	out := map[int]procInfo{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out[pid] = p
		}
	}
	return out
}

// readProc reads /proc/PID/stat (proc(5)): ppid is field 4, starttime 22,
// rss 24 (pages). comm, field 2, may hold spaces and ')'.
func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procInfo{}, false
	}
	open, shut := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || shut < open {
		return procInfo{}, false
	}
	f := bytes.Fields(b[shut+1:]) // f[0] is field 3
	if len(f) < 22 {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	start, _ := strconv.ParseUint(string(f[19]), 10, 64)
	rss, _ := strconv.ParseUint(string(f[21]), 10, 64)
	return procInfo{comm: string(b[open+1 : shut]), ppid: ppid, start: start, rss: rss * uint64(os.Getpagesize())}, true
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
		if p, ok := readProc(pid); ok {
			ps = append(ps, Proc{Pid: pid, Command: p.comm, RSS: p.rss})
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
		if p, ok := readProc(pid); ok && p.start == start {
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

// MemoryStat has no breakdown to give without a cgroup.
func (g *noneGroup) MemoryStat() (map[string]uint64, error) { return nil, nil }
