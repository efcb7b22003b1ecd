package cgroup

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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

	mu    sync.Mutex
	tree  map[int]bool // the child and every descendant seen so far
	s     Stats
	stop  chan struct{}
	done  chan struct{}
	limit bool // the ceiling was hit and the tree killed
}

func openNone(o Options, reason string) Group {
	return &noneGroup{Reason: reason, max: o.Limits.Max, tree: map[int]bool{}}
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
	g.tree = map[int]bool{cmd.Process.Pid: true}
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
	for grown := true; grown; {
		grown = false
		for pid, p := range procs {
			if !g.tree[pid] && g.tree[p.ppid] {
				g.tree[pid] = true
				grown = true
			}
		}
	}
	var rss uint64
	for pid := range g.tree {
		p, ok := procs[pid]
		if !ok {
			delete(g.tree, pid)
			continue
		}
		rss += p.rss
	}
	g.s.Current = rss
	g.s.Peak = max(g.s.Peak, rss)
	if g.max > 0 && rss > g.max && !g.limit {
		g.limit = true
		g.s.OOMKills++
		g.killLocked()
	}
}

type procInfo struct {
	ppid int
	rss  uint64
}

func readProcs() map[int]procInfo {
	out := map[int]procInfo{}
	ents, _ := os.ReadDir("/proc")
	page := uint64(os.Getpagesize())
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... ; comm may hold spaces and ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 22 {
			continue
		}
		ppid, _ := strconv.Atoi(string(f[1]))
		rss, _ := strconv.ParseUint(string(f[21]), 10, 64)
		out[pid] = procInfo{ppid: ppid, rss: rss * page}
	}
	return out
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

func (g *noneGroup) killLocked() {
	for pid := range g.tree {
		unix.Kill(pid, unix.SIGKILL)
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
