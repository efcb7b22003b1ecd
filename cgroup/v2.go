package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

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
	v2Kill         = "cgroup.kill"
	v2CgroupEvents = "cgroup.events"
	// supervisorLeaf is where guardrun moves itself when it must leave the
	// cgroup it was started in (see v2Base). Run names cannot start with a
	// dot, so it never collides with one.
	supervisorLeaf = ".supervisor"
)

// v2Group is a group on the unified hierarchy.
type v2Group struct {
	dir  string
	lock *os.File // the group directory itself: flock and CLONE_INTO_CGROUP fd
	// noClone says why this kernel will not clone a child straight into
	// the group (CloneIntoCgroup), nil when it will. Start then takes the
	// join start. A test sets it to take that start on any kernel.
	noClone error
	hold    *Hold // the name's, when this group took it and still keeps it
	removed bool
}

// v2Base picks the directory that holds guardrun's groups.
//
//   - guardrun at the root of its hierarchy (a host's root, or a container
//     with its own cgroup namespace), or root where systemd does not manage
//     the cgroups: <mount>/guardrun, a tree of its own.
//   - inside a subtree delegated to it (systemd's Delegate=yes marks it with
//     the trusted.delegate or user.delegate xattr, and the scope guardrun
//     asks systemd for is one: see scope.go), or a cgroup it owns as
//     non-root: groups beside a leaf it moves itself into, so the kernel's
//     "no internal processes" rule holds.
//   - anything else is a cgroup systemd manages and guardrun must first ask
//     it for a scope (scopeManager); openV2 does that before it gets here.
func v2Base(h Hierarchy) (base string, nested bool, err error) {
	own := ownV2(h)
	switch {
	case h.V2Own == "/":
		return filepath.Join(h.V2, "guardrun"), false, nil
	case delegated(own), writable(own):
		return own, true, nil
	case os.Geteuid() == 0:
		return filepath.Join(h.V2, "guardrun"), false, nil
	}
	return "", false, fmt.Errorf("cgroup %s is not delegated to uid %d", own, os.Geteuid())
}

// ownV2 is this process's v2 cgroup as a directory; when that is the leaf
// an earlier Open moved guardrun into, the delegated cgroup above it.
func ownV2(h Hierarchy) string {
	own := filepath.Join(h.V2, h.V2Own)
	if filepath.Base(own) == supervisorLeaf {
		own = filepath.Dir(own)
	}
	return own
}

// writable reports a cgroup that this user, not being root, may make
// groups in: one chowned to it by hand, or a user manager's.
func writable(dir string) bool {
	return os.Geteuid() != 0 && unix.Access(dir, unix.W_OK) == nil
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
	if m := scopeManager(h); m != "" {
		if err := enterScope(m, o.Name, o.Limits.Ceiling, ownV2(h)); err != nil {
			return nil, err
		}
		h = Discover()
	}
	base, nested, err := v2Base(h)
	if err != nil {
		return nil, err
	}
	if nested {
		ctl, err := readText(filepath.Join(base, v2Controllers))
		if err != nil {
			return nil, err
		}
		if !hasController(strings.ReplaceAll(strings.TrimSpace(string(ctl)), " ", ","), "memory") {
			why := fmt.Sprintf("the memory controller is not delegated to %s", base)
			if os.Geteuid() != 0 && strings.Contains(base, "/user@") {
				return nil, &ScopeError{Why: why + ": the user's systemd was given none", Hints: []string{notDelegatedHint}}
			}
			return nil, errors.New(why)
		}
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	if err := enableControllers(h, base); err != nil {
		return nil, err
	}
	g := &v2Group{dir: filepath.Join(base, o.Name), noClone: CloneIntoCgroup()}
	if o.Held == nil {
		if g.hold, err = holdName(base, o.Name); err != nil {
			return nil, err
		}
	}
	lock, _, err := claim(g.dir, []string{filepath.Join(g.dir, cgroupProcs)})
	if err != nil {
		g.hold.Release()
		return nil, err
	}
	g.lock = lock
	if err := g.setLimits(base, o.Limits); err != nil {
		g.Remove()
		return nil, err
	}
	if err := verifyLimits(filepath.Join(g.dir, v2Max), filepath.Join(g.dir, pidsMax), o.Limits); err != nil {
		g.Remove()
		return nil, err
	}
	return g, nil
}

// setLimits writes the limits that are set to the group claim made, as
// cgroup2.NewManager did while guardrun used the cgroups v3 library (see
// the package doc), and then memory.swap.max, as guardrun did after it.
//
// First "+memory", and "+pids" when pids.max is asked for, go to the
// parent's cgroup.subtree_control once more. The library wrote them to
// every directory from the mount down and returned the error of this last
// write only; enableControllers has made the others, so they are not
// repeated. This one still fails Open where enableControllers let the
// parent pass (memory on, the file not writable), and where --pids-max
// finds no pids controller to enable. Then memory.max, memory.high and
// pids.max, in the library's order. memory.swap.max exists only where the
// kernel accounts swap; it is written even at 0, which is "no swap".
func (g *v2Group) setLimits(parent string, l Limits) error {
	want := "+memory"
	if l.PidsMax > 0 {
		want += " +pids"
	}
	if err := writeFile(filepath.Join(parent, subtreeControl), want); err != nil {
		return err
	}
	err := writeLimits(
		limitFile{filepath.Join(g.dir, v2Max), l.Ceiling},
		limitFile{filepath.Join(g.dir, v2High), l.High},
		limitFile{filepath.Join(g.dir, pidsMax), uint64(max(l.PidsMax, 0))},
	)
	if err != nil {
		return err
	}
	if sw := filepath.Join(g.dir, v2SwapMax); l.Ceiling > 0 && fileExists(sw) {
		return writeFile(sw, strconv.FormatUint(l.SwapMax, 10))
	}
	return nil
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
			if ctl, e := readText(filepath.Join(dir, subtreeControl)); e == nil && strings.Contains(ctl, "memory") {
				continue
			}
			return err
		}
	}
	return nil
}

func enableIn(dir string) error {
	want := "+memory"
	if ctl, err := readText(filepath.Join(dir, v2Controllers)); err == nil && strings.Contains(ctl, "pids") {
		want += " +pids"
	}
	return writeFile(filepath.Join(dir, subtreeControl), want)
}

func (g *v2Group) Backend() string { return "v2" }
func (g *v2Group) Path() string    { return g.dir }

// Start puts the child in the group before its first instruction.
//
// Where the kernel can, the child is cloned straight into the group
// (CLONE_INTO_CGROUP, Linux 5.7): it is never anywhere else, not even for
// the instructions between fork and exec.
//
// Where it cannot (an older kernel, or a seccomp filter that refuses
// clone3, as Docker's default profile does for a container without
// CAP_SYS_ADMIN: moby/moby#42681), os/exec has no way round: UseCgroupFD
// makes forkAndExecInChild1 call clone3 and nothing else (Go's
// syscall/exec_linux.go), and every start fails with an error that names
// the command, "fork/exec /usr/bin/node: function not implemented"
// (ENOSYS: no clone3, before Linux 5.3 or under such a filter) or "...:
// argument list too long" (E2BIG: 5.3 to 5.6 have clone3 but refuse the
// larger struct with its cgroup field). There Start takes the join start
// (startJoined), which keeps every instruction of the command inside the
// group just as well.
//
// v2 has nothing like v1's lent thread (v1Group.Start): a single thread
// may change cgroup only inside a threaded subtree, and memory is a
// domain controller, which a threaded subtree cannot enable
// (Documentation/admin-guide/cgroup-v2.rst, "Threads").
func (g *v2Group) Start(cmd *exec.Cmd) error {
	if g.noClone != nil {
		return startJoined(cmd, filepath.Join(g.dir, cgroupProcs))
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(g.lock.Fd())
	return cloneError(cmd.Start(), g.dir)
}

// cloneError names the group when the kernel refused to clone into it.
// os/exec reports a failed clone3 as it reports a failed exec, "fork/exec
// COMMAND: ERRNO"; these errnos come from clone3 alone (execve never
// returns them), for a group the kernel will not put a process in: one
// with controllers enabled for children (EBUSY), a threaded one
// (EOPNOTSUPP), one being removed (ENODEV).
func cloneError(err error, dir string) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == "fork/exec" {
		switch pe.Err {
		case unix.EBUSY, unix.EOPNOTSUPP, unix.ENODEV:
			return fmt.Errorf("the kernel would not clone %s into %s: %w", pe.Path, dir, pe.Err)
		}
	}
	return err
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
	if s.Ceiling, err = readUint(filepath.Join(g.dir, v2Max)); err != nil {
		return s, err
	}
	events, err := readStat(filepath.Join(g.dir, v2Events)) // one read for both
	if err != nil {
		return s, err
	}
	s.OOMKills, s.High = events["oom_kill"], events["high"]
	s.MemoryStat, err = readStat(filepath.Join(g.dir, memoryStat))
	s.WorkingSet, s.Cache = WorkingSet("v2", s.Current, s.MemoryStat)
	return s, err
}

// Kill writes cgroup.kill (Linux 5.14), which the kernel applies to the
// whole tree at once, so a forking process cannot slip out between reads.
// Without it, or if the kernel refuses the write, guardrun kills what
// cgroup.procs lists until it reads empty (killAll), as on v1.
func (g *v2Group) Kill() error {
	kill := filepath.Join(g.dir, v2Kill)
	if !fileExists(kill) {
		if err := killAll(filepath.Join(g.dir, cgroupProcs), 5*time.Second); err != nil {
			return fmt.Errorf("kill %s: %w", g.dir, err)
		}
		return nil
	}
	werr := writeFile(kill, "1")
	if werr == nil {
		return nil
	}
	if err := killAll(filepath.Join(g.dir, cgroupProcs), 5*time.Second); err != nil {
		return fmt.Errorf("kill %s: %w; and then: %v", g.dir, werr, err)
	}
	return nil
}

func (g *v2Group) Remove() error {
	if g.removed {
		return nil
	}
	err := g.Kill()
	if err == nil {
		err = rmdir(g.dir)
	}
	g.lock.Close()
	g.removed = err == nil
	if g.removed {
		g.hold.Release()
	}
	return err
}

func (g *v2Group) Procs() ([]int, error) { return readPids(filepath.Join(g.dir, cgroupProcs)) }

// Placement says where v2 groups would go for this process, and why, for
// guardrun check.
func Placement(h Hierarchy) string {
	if !h.V2Memory() {
		return ""
	}
	switch scopeManager(h) {
	case "system":
		return h.V2 + "/" + ScopeSlice + "/" + ScopeUnit("NAME") + "/NAME: a transient scope (Delegate=yes) that guardrun asks systemd for, as this process's cgroup " + h.V2Own + " is systemd's and not delegated"
	case "user":
		where := h.V2 + "/.../user@" + strconv.Itoa(os.Getuid()) + ".service/" + ScopeSlice + "/" + ScopeUnit("NAME") + "/NAME"
		if _, _, err := userBus(); err != nil {
			return "none: " + err.Error()
		}
		return where + ": a transient scope (Delegate=yes) that guardrun asks the user's systemd for, as this process's cgroup " + h.V2Own + " is not this user's to write"
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
	return base + "/NAME, outside this process's cgroup " + h.V2Own + ": root, and systemd does not manage this host's cgroups"
}
