package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kernel files of the v1 memory and pids controllers.
const (
	v1Limit     = "memory.limit_in_bytes"
	v1SoftLimit = "memory.soft_limit_in_bytes"
	v1MemswLim  = "memory.memsw.limit_in_bytes"
	v1Usage     = "memory.usage_in_bytes"
	v1MaxUsage  = "memory.max_usage_in_bytes"
	v1OOMCtl    = "memory.oom_control"
	v1Tasks     = "tasks"
	cgroupProcs = "cgroup.procs" // both versions
	pidsMax     = "pids.max"     // both versions
)

// v1Group is a group in the v1 memory hierarchy, and in the pids hierarchy
// where one is mounted: <mount>/guardrun/<name> in each.
type v1Group struct {
	mem, pids string // group directories; pids is "" without a pids hierarchy
	lock      *os.File
	hold      *Hold // the name's, when this group took it and still keeps it
	removed   bool
}

func openV1(h Hierarchy, o Options) (Group, error) {
	if h.V1Memory == "" {
		return nil, errors.New("no cgroup v1 memory hierarchy is mounted")
	}
	// threadCgroups finds a group's hierarchy in /proc/thread-self/cgroup
	// by the base name of its mount, which is how every distribution
	// mounts them (<root>/memory, <root>/pids); refuse anything else
	// rather than move a thread by the wrong line.
	root := filepath.Dir(h.V1Memory)
	if filepath.Base(h.V1Memory) != "memory" {
		return nil, fmt.Errorf("cgroup v1 memory hierarchy at %s is not at <root>/memory", h.V1Memory)
	}
	g := &v1Group{mem: filepath.Join(h.V1Memory, "guardrun", o.Name)}
	var extra []string
	if h.V1Pids == filepath.Join(root, "pids") {
		g.pids = filepath.Join(h.V1Pids, "guardrun", o.Name)
		extra = append(extra, g.pids)
		if err := os.MkdirAll(filepath.Dir(g.pids), 0o755); err != nil {
			return nil, err
		}
	} else if o.Limits.PidsMax > 0 {
		return nil, errors.New("--pids-max needs the cgroup v1 pids hierarchy, which is not mounted")
	}
	if err := os.MkdirAll(filepath.Dir(g.mem), 0o755); err != nil {
		return nil, err
	}
	if o.Held == nil {
		hold, err := holdName(filepath.Dir(g.mem), o.Name)
		if err != nil {
			return nil, err
		}
		g.hold = hold
	}
	lock, _, err := claim(g.mem, g.procsFiles(), extra...)
	if err != nil {
		g.hold.Release()
		return nil, err
	}
	g.lock = lock
	if err := g.setLimits(o.Limits); err != nil {
		return nil, undo(g, err)
	}
	if err := verifyLimits(filepath.Join(g.mem, v1Limit), filepath.Join(g.pids, pidsMax), o.Limits); err != nil {
		return nil, undo(g, err)
	}
	return g, nil
}

// setLimits writes the limits that are set to the group claim made, in
// the order cgroup1.New wrote them while guardrun used the cgroups v3
// library (see the package doc): memory.limit_in_bytes,
// memory.soft_limit_in_bytes, memory.memsw.limit_in_bytes, then pids.max.
// memsw must follow the limit: the kernel refuses a memsw below
// memory.limit_in_bytes (mem_cgroup_resize_max), and a new group has both
// unlimited. On v1 the swap figure is memory+swap, so "no swap" is memsw
// == limit, written only where the kernel accounts swap. Nothing else is
// written: not memory.swappiness, not memory.use_hierarchy; the library
// wrote neither for these Limits.
func (g *v1Group) setLimits(l Limits) error {
	ls := []limitFile{
		{filepath.Join(g.mem, v1Limit), l.Ceiling},
		{filepath.Join(g.mem, v1SoftLimit), l.High},
	}
	if memsw := filepath.Join(g.mem, v1MemswLim); l.Ceiling > 0 && fileExists(memsw) {
		ls = append(ls, limitFile{memsw, l.Ceiling + l.SwapMax})
	}
	if g.pids != "" {
		ls = append(ls, limitFile{filepath.Join(g.pids, pidsMax), uint64(max(l.PidsMax, 0))})
	}
	return writeLimits(ls...)
}

func (g *v1Group) Backend() string { return "v1" }
func (g *v1Group) Path() string    { return g.mem }

func (g *v1Group) procsFiles() []string {
	files := []string{filepath.Join(g.mem, cgroupProcs)}
	if g.pids != "" {
		files = append(files, filepath.Join(g.pids, cgroupProcs))
	}
	return files
}

// Start places the child in the group before its first instruction. v1 has
// no CLONE_INTO_CGROUP, but it does let one thread join a group on its own
// (the "tasks" file), and a child inherits the cgroups of the thread that
// forked it. So: lock a thread, move just that thread into the group, start
// the child from it, and move the thread back. Go's os/exec forks from the
// calling thread, and the child's memory is charged to the child's own mm
// from its execve on, so nothing it allocates escapes the ceiling.
//
// The thread must live on afterwards: the child's parent-death signal fires
// when the thread that forked it exits (golang/go#27505). So it is unlocked,
// not ended, once /proc/thread-self/cgroup shows it home again. A thread
// that cannot get home is left locked instead: when its goroutine returns,
// the runtime ends a locked thread rather than hand it to other goroutines
// (runtime.LockOSThread), and a thread that ends leaves its groups.
// Unlocked, it would run the supervisor's goroutines with their kernel
// memory charged to the child's ceiling, and the group could never be
// removed (rmdir is EBUSY while any thread is in it). Start returns once
// that thread is gone, so Remove can follow at once.
func (g *v1Group) Start(cmd *exec.Cmd) error {
	return g.start(cmd, threadCgroups)
}

// start is Start with the lookup of the thread's home groups handed in, so
// a test can make the way back fail.
func (g *v1Group) start(cmd *exec.Cmd, findHome func(dirs []string) ([]string, error)) error {
	r := make(chan threadStart, 1)
	go g.startOnThread(cmd, findHome, r)
	res := <-r
	if res.stuck {
		waitThreadGone(res.tid)
	}
	return res.err
}

// threadStart is how a start from a lent thread went.
type threadStart struct {
	err   error
	tid   int
	stuck bool // the thread could not leave the group and is ending
}

func (g *v1Group) startOnThread(cmd *exec.Cmd, findHome func([]string) ([]string, error), r chan<- threadStart) {
	runtime.LockOSThread()
	tid := unix.Gettid()
	if tid == unix.Getpid() {
		// The main thread: the runtime never ends it, it parks a locked
		// main thread whose goroutine returns, so it could not be left
		// locked to end in the group. Holding it locked, the next
		// goroutine is sure to get another thread.
		inner := make(chan threadStart, 1)
		go g.startOnThread(cmd, findHome, inner)
		res := <-inner
		runtime.UnlockOSThread()
		r <- res
		return
	}
	stuck, err := g.startFromThread(cmd, tid, findHome)
	if !stuck {
		runtime.UnlockOSThread()
	}
	r <- threadStart{err: err, tid: tid, stuck: stuck}
}

// startFromThread runs on the locked thread tid. It reports stuck when the
// thread may still be in the group: its goroutine must then return with the
// thread locked.
func (g *v1Group) startFromThread(cmd *exec.Cmd, tid int, findHome func([]string) ([]string, error)) (stuck bool, err error) {
	t := strconv.Itoa(tid)
	home, err := findHome(g.dirs())
	if err != nil {
		return false, err
	}
	// pids first and memory last, and memory first on the way back: the
	// thread spends the least time charged to the child's ceiling, and
	// the pids moves charge nothing to it.
	for _, d := range []string{g.pids, g.mem} {
		if d == "" {
			continue
		}
		if err := writeFile(filepath.Join(d, v1Tasks), t); err != nil {
			if back := g.moveBack(home, t); back != nil {
				return true, fmt.Errorf("%w; and guardrun's thread %d could not leave the group, so it ends: %v", err, tid, back)
			}
			return false, err
		}
	}
	startErr := cmd.Start()
	if err := g.moveBack(home, t); err != nil {
		// The child, if any, would die with the thread by its
		// parent-death signal; make sure of that.
		if startErr == nil {
			cmd.Process.Kill()
			cmd.Process.Wait()
		}
		return true, fmt.Errorf("leave %s after starting the child: %w", g.mem, err)
	}
	return false, startErr
}

func (g *v1Group) dirs() []string {
	if g.pids == "" {
		return []string{g.mem}
	}
	return []string{g.mem, g.pids}
}

// moveBack moves thread t to its home groups (one per dir of g.dirs()),
// then reads /proc/thread-self/cgroup to see that it is there: a write that
// failed, or one that went elsewhere, leaves it where it was.
func (g *v1Group) moveBack(home []string, t string) error {
	var first error
	for _, d := range home {
		if err := writeFile(filepath.Join(d, v1Tasks), t); err != nil && first == nil {
			first = err
		}
	}
	now, err := threadCgroups(g.dirs())
	switch {
	case err != nil:
		return fmt.Errorf("see where thread %s is: %w", t, err)
	case !slices.Equal(now, home):
		if first == nil {
			first = errors.New("it went elsewhere")
		}
		return fmt.Errorf("thread %s is in %s, not home in %s: %w", t, strings.Join(now, " "), strings.Join(home, " "), first)
	}
	return nil
}

// waitThreadGone waits (bounded) until thread tid of this process has
// ended: /proc/self/task/TID is gone once the kernel has released it.
func waitThreadGone(tid int) {
	task := "/proc/self/task/" + strconv.Itoa(tid)
	for i := 0; i < 2000; i++ {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// threadCgroups finds, for each group dir, the directory of the same
// hierarchy that the calling thread is in now.
func threadCgroups(dirs []string) ([]string, error) {
	b, err := readText("/proc/thread-self/cgroup")
	if err != nil {
		return nil, err
	}
	var home []string
	for _, d := range dirs {
		mount := filepath.Dir(filepath.Dir(d)) // <mount>/guardrun/<name>
		ctrl := filepath.Base(mount)
		found := false
		for _, line := range strings.Split(b, "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && hasController(parts[1], ctrl) {
				home = append(home, filepath.Join(mount, parts[2]))
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("no %s line in /proc/thread-self/cgroup", ctrl)
		}
	}
	return home, nil
}

func hasController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}

func (g *v1Group) Stats() (Stats, error) {
	var s Stats
	var err error
	if s.Current, err = readUint(filepath.Join(g.mem, v1Usage)); err != nil {
		return s, err
	}
	if s.Peak, err = readUint(filepath.Join(g.mem, v1MaxUsage)); err != nil {
		return s, err
	}
	if s.Ceiling, err = readUint(filepath.Join(g.mem, v1Limit)); err != nil {
		return s, err
	}
	// An unlimited v1 group reads a page-rounded LONG_MAX, not "max".
	if s.Ceiling >= 1<<62 {
		s.Ceiling = 0
	}
	// oom_kill is in memory.oom_control since Linux 4.13.
	if s.OOMKills, err = readKey(filepath.Join(g.mem, v1OOMCtl), "oom_kill"); err != nil {
		return s, err
	}
	s.MemoryStat, err = readStat(filepath.Join(g.mem, memoryStat))
	s.WorkingSet, s.Cache = WorkingSet("v1", s.Current, s.MemoryStat)
	return s, err
}

func (g *v1Group) Kill() error {
	var first error
	for _, p := range g.procsFiles() {
		if err := killAll(p, 5*time.Second); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (g *v1Group) Remove() error {
	if g.removed {
		return nil
	}
	err := g.Kill()
	if err == nil {
		// pids first, memory (the locked one) last, so a crash in between
		// leaves the lock directory for the next run to find and clean.
		for _, d := range []string{g.pids, g.mem} {
			if d == "" {
				continue
			}
			if e := rmdir(d); e != nil && err == nil {
				err = e
			}
		}
	}
	g.lock.Close()
	g.removed = err == nil
	if g.removed {
		g.hold.Release()
	}
	return err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (g *v1Group) Procs() ([]int, error) { return readPids(filepath.Join(g.mem, cgroupProcs)) }
