package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Kernel files of the v1 memory and pids controllers.
const (
	v1Limit     = "memory.limit_in_bytes"
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
	cg        cgroup1.Cgroup
	lock      *os.File
	removed   bool
}

func openV1(h Hierarchy, o Options) (Group, error) {
	if h.V1Memory == "" {
		return nil, errors.New("no cgroup v1 memory hierarchy is mounted")
	}
	// containerd's cgroup1 places each controller at <root>/<controller>,
	// which is how every distribution mounts them; refuse anything else
	// rather than write limits to the wrong place.
	root := filepath.Dir(h.V1Memory)
	if filepath.Base(h.V1Memory) != "memory" {
		return nil, fmt.Errorf("cgroup v1 memory hierarchy at %s is not at <root>/memory", h.V1Memory)
	}
	subsystems := []cgroup1.Subsystem{cgroup1.NewMemory(root, cgroup1.OptionalSwap())}
	g := &v1Group{mem: filepath.Join(h.V1Memory, "guardrun", o.Name)}
	var extra []string
	if h.V1Pids == filepath.Join(root, "pids") {
		subsystems = append(subsystems, cgroup1.NewPids(root))
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
	lock, _, err := claim(g.mem, g.procsFiles(), extra...)
	if err != nil {
		return nil, err
	}
	g.lock = lock
	res := v1Resources(o.Limits, fileExists(filepath.Join(g.mem, v1MemswLim)))
	g.cg, err = cgroup1.New(cgroup1.StaticPath(filepath.Join("/guardrun", o.Name)), res,
		cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return subsystems, nil }))
	if err != nil {
		g.Remove()
		return nil, fmt.Errorf("set limits on %s: %w", g.mem, err)
	}
	if err := verifyLimits(filepath.Join(g.mem, v1Limit), filepath.Join(g.pids, pidsMax), o.Limits); err != nil {
		g.Remove()
		return nil, err
	}
	return g, nil
}

// v1Resources maps Limits to the OCI shape containerd takes. On v1 the
// swap figure is memory+swap (memory.memsw.limit_in_bytes), so "no swap"
// is memsw == limit.
func v1Resources(l Limits, memsw bool) *specs.LinuxResources {
	res := &specs.LinuxResources{Memory: &specs.LinuxMemory{}}
	if l.Max > 0 {
		max := int64(l.Max)
		res.Memory.Limit = &max
		if memsw {
			sw := int64(l.Max + l.SwapMax)
			res.Memory.Swap = &sw
		}
	}
	if l.High > 0 {
		soft := int64(l.High)
		res.Memory.Reservation = &soft
	}
	if l.PidsMax > 0 {
		res.Pids = &specs.LinuxPids{Limit: &l.PidsMax}
	}
	return res
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
// not ended, unless it could not leave the group.
func (g *v1Group) Start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- g.startFromThread(cmd)
	}()
	return <-errc
}

func (g *v1Group) startFromThread(cmd *exec.Cmd) error {
	tid := strconv.Itoa(unix.Gettid())
	home, err := threadCgroups(g.dirs())
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	for _, d := range g.dirs() {
		if err := writeFile(filepath.Join(d, v1Tasks), tid); err != nil {
			g.moveBack(home, tid)
			runtime.UnlockOSThread()
			return err
		}
	}
	startErr := cmd.Start()
	if err := g.moveBack(home, tid); err != nil {
		// Still locked: this goroutine returns and the runtime ends the
		// thread, which takes it out of the group. The child, if any, dies
		// with it by its parent-death signal; make sure of that.
		if startErr == nil {
			cmd.Process.Kill()
			cmd.Process.Wait()
		}
		return fmt.Errorf("leave %s after starting the child: %w", g.mem, err)
	}
	runtime.UnlockOSThread()
	return startErr
}

func (g *v1Group) dirs() []string {
	if g.pids == "" {
		return []string{g.mem}
	}
	return []string{g.mem, g.pids}
}

func (g *v1Group) moveBack(home []string, tid string) error {
	var first error
	for _, d := range home {
		if err := writeFile(filepath.Join(d, v1Tasks), tid); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// threadCgroups finds, for each group dir, the directory of the same
// hierarchy that the calling thread is in now.
func threadCgroups(dirs []string) ([]string, error) {
	b, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, err
	}
	var home []string
	for _, d := range dirs {
		mount := filepath.Dir(filepath.Dir(d)) // <mount>/guardrun/<name>
		ctrl := filepath.Base(mount)
		found := false
		for _, line := range strings.Split(string(b), "\n") {
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
	if s.Limit, err = readUint(filepath.Join(g.mem, v1Limit)); err != nil {
		return s, err
	}
	// An unlimited v1 group reads a page-rounded LONG_MAX, not "max".
	if s.Limit >= 1<<62 {
		s.Limit = 0
	}
	// oom_kill is in memory.oom_control since Linux 4.13.
	if s.OOMKills, err = readKey(filepath.Join(g.mem, v1OOMCtl), "oom_kill"); err != nil {
		return s, err
	}
	stat, err := readStat(filepath.Join(g.mem, memoryStat))
	s.WorkingSet, s.Cache = WorkingSet("v1", s.Current, stat)
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
	return err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (g *v1Group) Procs() ([]int, error) { return readPids(filepath.Join(g.mem, cgroupProcs)) }

func (g *v1Group) MemoryStat() (map[string]uint64, error) {
	return readStat(filepath.Join(g.mem, memoryStat))
}
