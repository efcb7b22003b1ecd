package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel features are checked, not assumed. Each one guardrun uses is
// tried here on the running kernel, and docs/KERNEL.md says which release
// brought it and what guardrun does without it. The releases are mainline
// ones; a distribution kernel may carry a feature back to an older one,
// which is one more reason to try rather than read uname.

// A Feature is one kernel feature guardrun uses, as tried on this kernel.
type Feature struct {
	Name    string // in the kernel's words: "CLONE_INTO_CGROUP", "memory.peak"
	Since   string // the mainline release that brought it: "5.7"
	Have    bool
	Why     string // when missing: what was tried and what the kernel said
	Without string // what guardrun does on a kernel without it
}

// cloneArgs is the kernel's struct clone_args up to its cgroup field:
// CLONE_ARGS_SIZE_VER2, 88 bytes (include/uapi/linux/sched.h).
type cloneArgs struct {
	flags, pidfd, childTID, parentTID, exitSignal, stack, stackSize, tls uint64
	setTID, setTIDSize, cgroup                                           uint64
}

// CloneIntoCgroup reports whether this kernel clones a child straight
// into a cgroup (clone3 with CLONE_INTO_CGROUP, Linux 5.7): nil if it
// does, else why not.
//
// It asks without making a process: clone3 with the flag and a cgroup
// descriptor above INT_MAX. A kernel that knows the flag refuses that with
// EINVAL while it copies the arguments in, before any task exists
// (copy_clone_args_from_user, kernel/fork.c). Linux 5.3 to 5.6 know a
// shorter struct and refuse the non-zero cgroup field beyond it with
// E2BIG (copy_struct_from_user); before 5.3 there is no clone3 (ENOSYS),
// and a seccomp filter that forbids clone3 says ENOSYS too (Docker's
// default profile, so that glibc falls back to clone: moby/moby#42681)
// or EPERM. A filter that answered EINVAL would pass for the feature;
// guardrun check proves it with a real child (Prove).
func CloneIntoCgroup() error {
	args := cloneArgs{flags: unix.CLONE_INTO_CGROUP, exitSignal: uint64(unix.SIGCHLD), cgroup: 1 << 31}
	r, _, errno := unix.RawSyscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
	if errno == 0 {
		// No kernel takes that descriptor; should one ever make a
		// process of it, the copy leaves at once and is reaped.
		if r == 0 {
			unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
		}
		unix.Wait4(int(r), nil, 0, nil)
	}
	return cloneVerdict(errno)
}

// cloneVerdict reads CloneIntoCgroup's errno.
func cloneVerdict(errno unix.Errno) error {
	switch errno {
	case unix.EINVAL:
		return nil
	case unix.ENOSYS:
		return errors.New("clone3 is not there: Linux before 5.3, or a seccomp filter refuses it (as Docker's default profile does)")
	case unix.E2BIG:
		return errors.New("clone3 does not take a cgroup: Linux 5.3 to 5.6")
	case unix.EPERM:
		return errors.New("clone3 is refused (operation not permitted): a seccomp filter")
	case 0:
		return errors.New("clone3 took a cgroup descriptor above INT_MAX")
	}
	return fmt.Errorf("clone3 with CLONE_INTO_CGROUP: %w", errno)
}

// KernelRelease is uname -r.
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// probeEnv makes guardrun's own binary a probe child (see Prove).
const probeEnv = "GUARDRUN_CGROUP_PROBE"

func init() {
	// A probe started by the join start is the shim first (join.go's
	// init): that must wait for its go, and exec the probe.
	if _, shim := os.LookupEnv(joinEnv); os.Getenv(probeEnv) == "1" && !shim {
		os.Exit(probeChild())
	}
}

// probeChild says, from inside, which cgroups it runs in. It runs from
// package initialisation, before any main or TestMain, as the shim.
func probeChild() int {
	b, err := readText("/proc/self/cgroup")
	if err != nil {
		fmt.Fprintln(os.Stderr, "guardrun: probe:", err)
		return 1
	}
	os.Stdout.WriteString(b)
	return 0
}

// Proof is what Prove saw.
type Proof struct {
	Pid    int
	Inside string // the group, as the child's own /proc/self/cgroup named it
	How    string // how the child was put there
	// Notified: the kernel signalled inotify IN_MODIFY on the group's
	// cgroup.events as the child came and went (v2).
	Notified  bool
	NotifyErr error // why not, when not
}

// Prove starts a probe child in g the way a run's child is started (this
// binary, reading its own /proc/self/cgroup), waits for it, and checks
// that the child found itself in g, in every hierarchy of g. g should be
// empty; it is left as it was.
func Prove(g Group) (Proof, error) {
	var p Proof
	want, err := insideLines(g)
	if err != nil {
		return p, err
	}
	p.How = startHow(g)
	in := -1
	if v2, ok := g.(*v2Group); ok {
		if in, p.NotifyErr = watchEvents(filepath.Join(v2.dir, v2CgroupEvents)); in >= 0 {
			defer unix.Close(in)
		}
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"guardrun-probe"}
	cmd.Env = append(os.Environ(), probeEnv+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := g.Start(cmd); err != nil {
		return p, fmt.Errorf("start a probe child in %s: %w", g.Path(), err)
	}
	p.Pid = cmd.Process.Pid
	if err := cmd.Wait(); err != nil {
		return p, fmt.Errorf("probe child %d in %s: %v %s", p.Pid, g.Path(), err, strings.TrimSpace(errb.String()))
	}
	for ctrl, path := range want {
		got, ok := cgroupLine(out.String(), ctrl)
		if !ok || got != path {
			return p, fmt.Errorf("probe child %d started in %s found itself in %q of its /proc/self/cgroup, not %q:\n%s", p.Pid, g.Path(), got, path, out.String())
		}
		if p.Inside == "" || ctrl == "memory" {
			p.Inside = path
		}
	}
	if in >= 0 {
		if p.Notified = waitReadable(in, time.Second); !p.Notified {
			p.NotifyErr = fmt.Errorf("no inotify IN_MODIFY on %s within 1s of the probe child's start and exit", filepath.Join(g.Path(), v2CgroupEvents))
		}
	}
	return p, nil
}

// insideLines is what a child in g reads in /proc/self/cgroup: for each
// hierarchy ("" for v2's "0::" line, else a v1 controller), the path.
func insideLines(g Group) (map[string]string, error) {
	h := Discover()
	rel := func(dir, mount string) string {
		return "/" + strings.TrimPrefix(strings.TrimPrefix(dir, mount), "/")
	}
	switch g := g.(type) {
	case *v2Group:
		return map[string]string{"": rel(g.dir, h.V2)}, nil
	case *v1Group:
		want := map[string]string{"memory": rel(g.mem, h.V1Memory)}
		if g.pids != "" {
			want["pids"] = rel(g.pids, h.V1Pids)
		}
		return want, nil
	}
	return nil, fmt.Errorf("no cgroup to prove with backend %q", g.Backend())
}

// cgroupLine finds the path of one hierarchy in /proc/PID/cgroup text:
// "0::PATH" for v2 (ctrl ""), "N:CTRL,...:PATH" for a v1 controller.
func cgroupLine(text, ctrl string) (string, bool) {
	for _, line := range strings.Split(text, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if ctrl == "" && parts[0] == "0" && parts[1] == "" || ctrl != "" && hasController(parts[1], ctrl) {
			return parts[2], true
		}
	}
	return "", false
}

// startHow says how Start puts a child in g.
func startHow(g Group) string {
	switch g := g.(type) {
	case *v2Group:
		if g.noClone == nil {
			return "cloned straight into the group (CLONE_INTO_CGROUP)"
		}
		return "started as guardrun's own binary, moved into the group, and only then exec'd (no CLONE_INTO_CGROUP: " + g.noClone.Error() + ")"
	case *v1Group:
		return "forked from one guardrun thread moved into the group (cgroup v1 tasks)"
	}
	return "not in a cgroup"
}

// watchEvents arms inotify IN_MODIFY on a cgroup.events file.
func watchEvents(file string) (int, error) {
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(in, file, unix.IN_MODIFY); err != nil {
		unix.Close(in)
		return -1, fmt.Errorf("inotify on %s: %w", file, err)
	}
	return in, nil
}

func waitReadable(fd int, d time.Duration) bool {
	end := time.Now().Add(d)
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(time.Until(end)/time.Millisecond)+1)
		if errors.Is(err, unix.EINTR) && time.Now().Before(end) {
			continue
		}
		return err == nil && n > 0
	}
}

// Features tries, on g and this kernel, each kernel feature that g's
// backend uses, then those every backend uses. p is what Prove saw in g
// (the zero Proof if it was not run).
func Features(g Group, p Proof) []Feature {
	var fs []Feature
	switch g := g.(type) {
	case *v2Group:
		fs = v2Features(g, p)
	case *v1Group:
		fs = v1Features(g)
	}
	return append(fs, hostFeatures()...)
}

func v2Features(g *v2Group, p Proof) []Feature {
	file := func(name string) string { return filepath.Join(g.dir, name) }
	fs := []Feature{
		{Name: "CLONE_INTO_CGROUP", Since: "5.7", Have: g.noClone == nil, Why: errText(g.noClone),
			Without: "the child starts as guardrun's own binary, which guardrun moves into the group before it execs the command: the command still runs nowhere else"},
		exists("cgroup.kill", "5.14", file(v2Kill),
			"guardrun kills what cgroup.procs lists, again until it reads empty"),
		exists("memory.peak", "5.19", file(v2Peak),
			"the peak reported is memory.current when read, not the high-water mark"),
		hasKey("oom_kill in memory.events", "4.13", file(v2Events), "oom_kill",
			"an OOM kill cannot be told from another SIGKILL: the child's end is reported by its signal"),
	}
	notify := Feature{Name: "inotify on cgroup files", Since: "4.4", Have: p.Notified, Why: errText(p.NotifyErr),
		Without: "OOM kills are told when the child ends, not the moment the kernel counts them"}
	if p.Pid == 0 {
		in, err := watchEvents(file(v2Events))
		if err == nil {
			unix.Close(in)
		}
		notify.Have, notify.Why = err == nil, errText(err)
		if notify.Have {
			notify.Why = "a watch was added; no child has proved that the kernel signals it"
		}
	}
	psi := Feature{Name: "PSI memory.pressure", Since: "4.20",
		Without: "--pressure and --restart-on-pressure are refused"}
	if _, err := readText(file(v2Pressure)); err != nil {
		psi.Why = err.Error()
		if errors.Is(err, unix.EOPNOTSUPP) {
			psi.Why += " (PSI is off: boot with psi=1)"
		}
	} else {
		psi.Have = true
	}
	trigger := Feature{Name: "PSI triggers", Since: "5.2", Have: true,
		Without: "--pressure is refused with the kernel's error"}
	if err := tryTrigger(file(v2Pressure)); err != nil {
		trigger.Have, trigger.Why = false, err.Error()
		if os.Geteuid() != 0 {
			trigger.Why += " (without root a trigger needs Linux 6.4 and a window that is a multiple of 2s)"
		}
	}
	swap := exists("memory.swap.max", "4.5", file(v2SwapMax), noSwapControl)
	return append(fs, notify, psi, trigger, swap)
}

func v1Features(g *v1Group) []Feature {
	file := func(name string) string { return filepath.Join(g.mem, name) }
	fs := []Feature{
		hasKey("oom_kill in memory.oom_control", "4.13", file(v1OOMCtl), "oom_kill",
			"an OOM kill cannot be told from another SIGKILL: the child's end is reported by its signal"),
		eventFeature("cgroup.event_control usage threshold", "2.6.34", g.mem, v1Usage, "4096",
			"--restart-at is refused with the kernel's error"),
		eventFeature("cgroup.event_control OOM notification", "2.6.35", g.mem, v1OOMCtl, "",
			"OOM kills are told when the child ends, not the moment the kernel reports them; with --restart-at the run is refused"),
		exists("memory.memsw.limit_in_bytes", "2.6.29", file(v1MemswLim), noSwapControl),
	}
	pids := Feature{Name: "pids hierarchy", Since: "4.3", Have: g.pids != "",
		Without: "--pids-max is refused"}
	if !pids.Have {
		pids.Why = "no cgroup v1 pids hierarchy is mounted at " + filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(g.mem))), "pids")
	}
	return append(fs, pids)
}

// noSwapControl is what guardrun does where the kernel accounts no swap
// to a group (booted swapaccount=0, or built without swap accounting).
const noSwapControl = "guardrun cannot apply --swap-max, so the group may swap (the kernel accounts no swap to it: booted swapaccount=0, or built without)"

// hostFeatures are used whatever the backend.
func hostFeatures() []Feature {
	kmsg := Feature{Name: "/dev/kmsg", Since: "3.5", Have: true,
		Without: "an OOM kill is still told from the group's counter, without the kernel's line that names the victim"}
	if fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err != nil {
		kmsg.Have, kmsg.Why = false, "open /dev/kmsg: "+err.Error()
	} else {
		unix.Close(fd)
	}
	pidfd := Feature{Name: "pidfd", Since: "5.4", Have: true,
		Without: "Go's os package signals and waits by pid, as before Go 1.23; guardrun reaps its child itself, so the pid is not reused while it signals it"}
	if err := tryPidfd(); err != nil {
		pidfd.Have, pidfd.Why = false, err.Error()
	}
	return []Feature{kmsg, pidfd}
}

// tryPidfd asks what Go's os package asks before it uses pidfds
// (checkPidfd, os/pidfd_linux.go): pidfd_open (5.3) and waitid(P_PIDFD)
// (5.4) on this process.
func tryPidfd() error {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(fd)
	var info unix.Siginfo
	for {
		err = unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if !errors.Is(err, unix.ECHILD) {
		return fmt.Errorf("waitid(P_PIDFD): %v", err)
	}
	return nil
}

// tryTrigger writes a PSI trigger (some 100 ms stalled in 1 s, the
// shape --pressure takes) to memory.pressure and drops it.
func tryTrigger(file string) error {
	fd, err := unix.Open(file, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", file, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("some 100000 1000000\x00")); err != nil {
		return fmt.Errorf("write a PSI trigger to %s: %w", file, err)
	}
	return nil
}

// eventFeature registers an eventfd for control (memory.usage_in_bytes
// with a threshold, or memory.oom_control with none) in the group's
// cgroup.event_control, as Watch does on v1, and drops it: the kernel
// forgets a registration when its eventfd is closed.
func eventFeature(name, since, dir, control, arg, without string) Feature {
	f := Feature{Name: name, Since: since, Have: true, Without: without}
	efd, err := registerEvent(dir, control, arg)
	if err != nil {
		f.Have, f.Why = false, err.Error()
		return f
	}
	unix.Close(efd)
	return f
}

func exists(name, since, file, without string) Feature {
	f := Feature{Name: name, Since: since, Have: fileExists(file), Without: without}
	if !f.Have {
		f.Why = file + " is missing"
	}
	return f
}

func hasKey(name, since, file, key, without string) Feature {
	f := Feature{Name: name, Since: since, Without: without}
	b, err := readText(file)
	if err != nil {
		f.Why = err.Error()
		return f
	}
	for _, line := range strings.Split(b, "\n") {
		if k, _, _ := strings.Cut(line, " "); k == key {
			f.Have = true
			return f
		}
	}
	f.Why = "no " + key + " line in " + file
	return f
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
