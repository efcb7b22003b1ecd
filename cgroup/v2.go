package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

// Kernel files of the unified hierarchy.
const (
	v2Max          = "memory.max"
	v2SwapMax      = "memory.swap.max"
	v2Current      = "memory.current"
	v2Peak         = "memory.peak"
	v2Events       = "memory.events"
	v2High         = "memory.high"
	v2Pressure     = "memory.pressure"
	subtreeControl = "cgroup.subtree_control"
	v2Controllers  = "cgroup.controllers"
	// supervisorLeaf is where guardrun moves itself when it must leave the
	// cgroup it was started in (see v2Base). Run names cannot start with a
	// dot, so it never collides with one.
	supervisorLeaf = ".supervisor"
)

// v2Group is a group on the unified hierarchy.
type v2Group struct {
	dir     string
	mgr     *cgroup2.Manager
	lock    *os.File // the group directory itself: flock and CLONE_INTO_CGROUP fd
	removed bool
}

// v2Base picks the directory that holds guardrun's groups.
//
//   - guardrun at the root of its hierarchy (a host's root, or a container
//     with its own cgroup namespace), or root outside a delegated subtree:
//     <mount>/guardrun, a tree of its own where no service manager fights
//     over it.
//   - inside a subtree delegated to it (systemd's Delegate=yes marks it with
//     the trusted.delegate or user.delegate xattr), or a cgroup it owns as
//     non-root: groups beside a leaf it moves itself into, so the kernel's
//     "no internal processes" rule holds.
//   - anything else (non-root, nothing delegated) is refused with the fix:
//     systemd-run --user --scope -p Delegate=yes gives guardrun a delegated
//     scope from the user's own systemd.
func v2Base(h Hierarchy) (base string, nested bool, err error) {
	own := filepath.Join(h.V2, h.V2Own)
	if filepath.Base(own) == supervisorLeaf {
		// Already in the leaf an earlier guardrun moved into: the
		// delegated cgroup is the one above it.
		own = filepath.Dir(own)
	}
	switch {
	case h.V2Own == "/":
		return filepath.Join(h.V2, "guardrun"), false, nil
	case delegated(own):
		return own, true, nil
	case os.Geteuid() == 0:
		return filepath.Join(h.V2, "guardrun"), false, nil
	case unix.Access(own, unix.W_OK) == nil:
		return own, true, nil
	}
	return "", false, fmt.Errorf("cgroup %s is not delegated to uid %d; run guardrun under `systemd-run --user --scope -p Delegate=yes`, or as root", own, os.Geteuid())
}

func delegated(dir string) bool {
	buf := make([]byte, 8)
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		if n, err := unix.Getxattr(dir, attr, buf); err == nil && strings.TrimSpace(string(buf[:n])) == "1" {
			return true
		}
	}
	return false
}

func openV2(h Hierarchy, o Options) (Group, error) {
	if !h.V2Memory() {
		if h.V2 == "" {
			return nil, errors.New("no cgroup2 filesystem is mounted")
		}
		return nil, fmt.Errorf("the cgroup2 hierarchy at %s has no memory controller (it is bound to cgroup v1)", h.V2)
	}
	base, nested, err := v2Base(h)
	if err != nil {
		return nil, err
	}
	if nested {
		ctl, err := os.ReadFile(filepath.Join(base, v2Controllers))
		if err != nil {
			return nil, err
		}
		if !hasController(strings.ReplaceAll(strings.TrimSpace(string(ctl)), " ", ","), "memory") {
			return nil, fmt.Errorf("the memory controller is not delegated to %s", base)
		}
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	if err := enableControllers(h, base); err != nil {
		return nil, err
	}
	g := &v2Group{dir: filepath.Join(base, o.Name)}
	lock, _, err := claim(g.dir, []string{filepath.Join(g.dir, cgroupProcs)})
	if err != nil {
		return nil, err
	}
	g.lock = lock
	res := &cgroup2.Resources{Memory: &cgroup2.Memory{}}
	if o.Limits.Max > 0 {
		max := int64(o.Limits.Max)
		res.Memory.Max = &max
	}
	if o.Limits.High > 0 {
		high := int64(o.Limits.High)
		res.Memory.High = &high
	}
	if o.Limits.PidsMax > 0 {
		res.Pids = &cgroup2.Pids{Max: o.Limits.PidsMax}
	}
	rel := strings.TrimPrefix(g.dir, h.V2)
	if g.mgr, err = cgroup2.NewManager(h.V2, rel, res); err != nil {
		g.Remove()
		return nil, fmt.Errorf("set limits on %s: %w", g.dir, err)
	}
	// memory.swap.max exists only where the kernel accounts swap.
	if sw := filepath.Join(g.dir, v2SwapMax); o.Limits.Max > 0 && fileExists(sw) {
		if err := writeFile(sw, strconv.FormatUint(o.Limits.SwapMax, 10)); err != nil {
			g.Remove()
			return nil, err
		}
	}
	if err := verifyLimits(filepath.Join(g.dir, v2Max), filepath.Join(g.dir, pidsMax), o.Limits); err != nil {
		g.Remove()
		return nil, err
	}
	return g, nil
}

// enableControllers turns on memory and pids for the children of every
// directory from the mount down to base. The kernel refuses (EBUSY) where a
// directory still holds processes; if that directory is guardrun's own
// cgroup, guardrun moves itself into a leaf under base and tries again.
func enableControllers(h Hierarchy, base string) error {
	own := filepath.Join(h.V2, h.V2Own)
	rel, err := filepath.Rel(h.V2, base)
	if err != nil {
		return err
	}
	dir := h.V2
	for _, part := range append([]string{""}, strings.Split(rel, "/")...) {
		dir = filepath.Join(dir, part)
		err := enableIn(dir)
		if errors.Is(err, unix.EBUSY) && dir == own {
			leaf := filepath.Join(base, supervisorLeaf)
			if err := os.MkdirAll(leaf, 0o755); err != nil {
				return err
			}
			if err := writeFile(filepath.Join(leaf, cgroupProcs), strconv.Itoa(os.Getpid())); err != nil {
				return err
			}
			err = enableIn(dir)
		}
		if err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("%w: %s holds processes, so the kernel will not enable controllers for its children", err, dir)
			}
			// A non-root user may not write above its delegation; that is
			// fine as long as memory is already on there.
			if ctl, e := os.ReadFile(filepath.Join(dir, subtreeControl)); e == nil && strings.Contains(string(ctl), "memory") {
				continue
			}
			return err
		}
	}
	return nil
}

func enableIn(dir string) error {
	want := "+memory"
	if ctl, err := os.ReadFile(filepath.Join(dir, v2Controllers)); err == nil && strings.Contains(string(ctl), "pids") {
		want += " +pids"
	}
	err := os.WriteFile(filepath.Join(dir, subtreeControl), []byte(want), 0)
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", want, filepath.Join(dir, subtreeControl), err)
	}
	return nil
}

func (g *v2Group) Backend() string { return "v2" }
func (g *v2Group) Path() string    { return g.dir }

// Start clones the child straight into the group (CLONE_INTO_CGROUP, Linux
// 5.7): it is never anywhere else, not even for the instructions between
// fork and exec.
func (g *v2Group) Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(g.lock.Fd())
	return cmd.Start()
}

func (g *v2Group) Stats() (Stats, error) {
	var s Stats
	var err error
	if s.Current, err = readUint(filepath.Join(g.dir, v2Current)); err != nil {
		return s, err
	}
	// memory.peak arrived in Linux 5.19; before it the best we have is now.
	if s.Peak, err = readUint(filepath.Join(g.dir, v2Peak)); err != nil {
		s.Peak = s.Current
	}
	if s.Limit, err = readUint(filepath.Join(g.dir, v2Max)); err != nil {
		return s, err
	}
	if s.OOMKills, err = readKey(filepath.Join(g.dir, v2Events), "oom_kill"); err != nil {
		return s, err
	}
	if s.High, err = readKey(filepath.Join(g.dir, v2Events), "high"); err != nil {
		return s, err
	}
	stat, err := readStat(filepath.Join(g.dir, memoryStat))
	s.WorkingSet, s.Cache = WorkingSet("v2", s.Current, stat)
	return s, err
}

// Kill writes cgroup.kill (Linux 5.14), which the kernel applies to the
// whole tree at once, so a forking process cannot slip out between reads.
// Older kernels get containerd's freeze-and-kill fallback.
func (g *v2Group) Kill() error {
	if err := g.mgr.Kill(); err != nil {
		return fmt.Errorf("kill %s: %w", g.dir, err)
	}
	return nil
}

func (g *v2Group) Remove() error {
	if g.removed {
		return nil
	}
	var err error
	if g.mgr != nil {
		err = g.Kill()
	} else {
		err = killAll(filepath.Join(g.dir, cgroupProcs), 5e9)
	}
	if err == nil {
		err = rmdir(g.dir)
	}
	g.lock.Close()
	g.removed = err == nil
	return err
}

func (g *v2Group) Procs() ([]int, error) { return readPids(filepath.Join(g.dir, cgroupProcs)) }

func (g *v2Group) MemoryStat() (map[string]uint64, error) {
	return readStat(filepath.Join(g.dir, memoryStat))
}

// Placement says where v2 groups would go for this process, and why, for
// guardrun check.
func Placement(h Hierarchy) string {
	if !h.V2Memory() {
		return ""
	}
	base, nested, err := v2Base(h)
	switch {
	case err != nil:
		return "none: " + err.Error()
	case nested && delegated(base):
		return base + "/NAME, inside this cgroup, delegated to guardrun (Delegate=yes); guardrun moves itself into " + supervisorLeaf
	case nested:
		return base + "/NAME, inside this cgroup, which this user may write"
	case h.V2Own == "/":
		return base + "/NAME: guardrun is at the root of its hierarchy (a host, or a container's cgroup namespace)"
	}
	return base + "/NAME, outside this process's cgroup " + h.V2Own + ", which is not delegated (no Delegate=yes): the service manager does not manage groups there"
}
