package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/guardrun/guardrun/internal/testchild"
	"golang.org/x/sys/unix"
)

// forceJoin makes g start its children as a kernel without
// CLONE_INTO_CGROUP does.
func forceJoin(t testing.TB, g Group) {
	t.Helper()
	v2, ok := g.(*v2Group)
	if !ok {
		t.Fatalf("%T is not a v2 group", g)
	}
	v2.noClone = errors.New("forced by the test")
}

// kernelAtLeast reports whether uname -r is at least major.minor.
func kernelAtLeast(major, minor int) bool {
	var a, b int
	fmt.Sscanf(KernelRelease(), "%d.%d", &a, &b)
	return a > major || a == major && b >= minor
}

func TestFeatureCloneIntoCgroup(t *testing.T) {
	err := CloneIntoCgroup()
	if kernelAtLeast(5, 7) && err != nil {
		t.Fatalf("Linux %s has CLONE_INTO_CGROUP, but the probe says: %v", KernelRelease(), err)
	}
	if !kernelAtLeast(5, 7) && err == nil {
		t.Fatalf("Linux %s has no CLONE_INTO_CGROUP, but the probe says it has", KernelRelease())
	}
}

func TestFeatureCloneVerdicts(t *testing.T) {
	for _, tc := range []struct {
		errno unix.Errno
		have  bool
		says  string
	}{
		{unix.EINVAL, true, ""},
		{unix.ENOSYS, false, "Linux before 5.3, or a seccomp filter"},
		{unix.E2BIG, false, "Linux 5.3 to 5.6"},
		{unix.EPERM, false, "seccomp"},
		{unix.EFAULT, false, "bad address"},
	} {
		err := cloneVerdict(tc.errno)
		if (err == nil) != tc.have || err != nil && !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%v: %v, want have=%v saying %q", tc.errno, err, tc.have, tc.says)
		}
	}
}

// seccompEnv makes this test binary, run as TestFeatureSeccompHelper,
// refuse clone3 with the errno it holds before it tries anything.
const seccompEnv = "GK_SECCOMP_CLONE3"

// A kernel is faked old the one honest way there is: a seccomp filter
// makes clone3 fail as Linux before 5.3 (ENOSYS, which is also what
// Docker's default profile answers) or 5.3 to 5.6 (E2BIG) would. The
// probe must say no, and on v2 a child must still start inside its group.
func TestFeatureCloneIntoCgroupRefusedBySeccomp(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the filter below checks the x86_64 audit arch")
	}
	for _, errno := range []unix.Errno{unix.ENOSYS, unix.E2BIG} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFeatureSeccompHelper$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), seccompEnv+"="+strconv.Itoa(int(errno)))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("clone3 refused with %v: %v\n%s", errno, err, out)
		}
		if !strings.Contains(string(out), "--- PASS: TestFeatureSeccompHelper") {
			t.Fatalf("clone3 refused with %v: the helper did not pass:\n%s", errno, out)
		}
		t.Logf("clone3 refused with %v:\n%s", errno, out)
	}
}

func TestFeatureSeccompHelper(t *testing.T) {
	v := os.Getenv(seccompEnv)
	if v == "" {
		t.Skip("run by TestFeatureCloneIntoCgroupRefusedBySeccomp")
	}
	n, _ := strconv.Atoi(v)
	errno := unix.Errno(n)
	if err := refuseClone3(errno); err != nil {
		t.Fatalf("install the seccomp filter: %v", err)
	}
	err := CloneIntoCgroup()
	if err == nil {
		t.Fatalf("clone3 answers %v, but the probe says CLONE_INTO_CGROUP works", errno)
	}
	t.Logf("probe: %v", err)
	h := Discover()
	if h.Version() != "v2" || os.Geteuid() != 0 {
		t.Logf("no v2 group to start a child in (%s, euid %d): the probe alone was checked", h.Version(), os.Geteuid())
		return
	}
	g := openAs(t, "gk", "v2", Limits{Ceiling: 128 << 20})
	if g.(*v2Group).noClone == nil {
		t.Fatal("Open did not find that CLONE_INTO_CGROUP is refused")
	}
	assertStartsInside(t, g)
	p, err := Prove(g)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.How, "guardrun's own binary") {
		t.Fatalf("the probe child was %s", p.How)
	}
	t.Logf("probe child %d in %s: %s", p.Pid, p.Inside, p.How)
}

// refuseClone3 installs, on every thread of this process, a seccomp
// filter that fails clone3 with errno and allows every other call.
func refuseClone3(errno unix.Errno) error {
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	prog := []unix.SockFilter{
		{Code: ld, K: 4}, // seccomp_data.arch
		{Code: jeq, Jt: 1, K: unix.AUDIT_ARCH_X86_64},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
		{Code: ld, K: 0}, // seccomp_data.nr
		{Code: jeq, Jf: 1, K: unix.SYS_CLONE3},
		{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(errno)},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return e
	}
	return nil
}

// assertStartsInside starts a child in g that prints its own
// /proc/self/cgroup, and checks it was in g.
func assertStartsInside(t *testing.T, g Group) {
	t.Helper()
	c := child("cgroup")
	var out strings.Builder
	c.Stdout = &out
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	want, err := insideLines(g)
	if err != nil {
		t.Fatal(err)
	}
	for ctrl, path := range want {
		if got, _ := cgroupLine(out.String(), ctrl); got != path {
			t.Fatalf("child's %q line reads %q, want %q:\n%s", ctrl, got, path, out.String())
		}
	}
	procs, _ := readPids(filepath.Join(g.Path(), cgroupProcs))
	for _, p := range procs {
		if p == os.Getpid() {
			t.Fatalf("guardrun (%d) is in %s", p, g.Path())
		}
	}
}

func TestStartJoinedPutsChildInside(t *testing.T) {
	g := openAs(t, "gk", "v2", Limits{Ceiling: 128 << 20})
	forceJoin(t, g)
	assertStartsInside(t, g)
}

// The join start on a v1 group: the same shim and the same move, into
// the memory and pids groups both. It runs on the host, where guardrun
// itself starts v1 children from a lent thread.
func TestStartJoinedIntoV1Groups(t *testing.T) {
	g := openAs(t, "gk", "v1", Limits{Ceiling: 128 << 20})
	v1 := g.(*v1Group)
	c := child("cgroup")
	var out strings.Builder
	c.Stdout = &out
	if err := startJoined(c, v1.procsFiles()...); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	want, _ := insideLines(g)
	for ctrl, path := range want {
		if got, _ := cgroupLine(out.String(), ctrl); got != path {
			t.Fatalf("child's %s line reads %q, want %q:\n%s", ctrl, got, path, out.String())
		}
	}
}

func TestStartJoinedOOMKillAtCeiling(t *testing.T) {
	g := openAs(t, "gk", "v2", Limits{Ceiling: 64 << 20})
	forceJoin(t, g)
	requireOOMKillAtCeiling(t, g)
}

// The shim is moved into the group before it says go, so what it does
// then is charged to the group: at the floor on --max (8 MiB, MinCeiling)
// a trivial child must still start and exit without an OOM kill.
func TestStartJoinedAtTheFloor(t *testing.T) {
	g := openAs(t, "gk", "v2", Limits{Ceiling: 8 << 20})
	forceJoin(t, g)
	c := child("exit", "0")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("child at 8 MiB: %v", err)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.OOMKills != 0 {
		t.Fatalf("oom_kill %d at 8 MiB", s.OOMKills)
	}
	t.Logf("peak %s of %s", FormatSize(s.Peak), FormatSize(s.Ceiling))
}

// The command's environment and descriptors are its own: no marker, no
// socket to the shim's parent.
func TestStartJoinedLeavesNoTrace(t *testing.T) {
	g := openAs(t, "gk", "v2", Limits{Ceiling: 128 << 20})
	forceJoin(t, g)
	ready := filepath.Join(t.TempDir(), "ready")
	c := child("ready", ready, "30s")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	defer c.Wait()
	defer c.Process.Kill()
	testchild.WaitFile(t, ready)
	pid := c.Process.Pid
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(env), joinEnv) {
		t.Fatalf("the command's environment holds %s", joinEnv)
	}
	if !strings.Contains(string(env), testchild.Env+"=1") {
		t.Fatalf("the command's environment lost what it was given")
	}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if l, _ := os.Readlink(fd); strings.HasPrefix(l, "socket:") {
			t.Fatalf("the command holds %s -> %s", fd, l)
		}
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == "" {
		t.Fatal("no exe")
	}
}

// An exec that fails in the shim is reported as os/exec reports its
// own: "not found" and "not executable" keep their errors (127, 126),
// and nothing is left in the group.
func TestStartJoinedExecErrors(t *testing.T) {
	g := openAs(t, "gk", "v2", Limits{Ceiling: 128 << 20})
	forceJoin(t, g)
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("not a program\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		is   error
	}{
		{filepath.Join(dir, "missing"), fs.ErrNotExist},
		{plain, fs.ErrPermission},
		{dir, fs.ErrPermission},
	} {
		c := exec.Command(tc.path)
		err := g.Start(c)
		var pe *fs.PathError
		if !errors.As(err, &pe) || pe.Op != "fork/exec" || pe.Path != tc.path || !errors.Is(err, tc.is) {
			t.Errorf("start %s: %v, want fork/exec %s: %v", tc.path, err, tc.path, tc.is)
		}
		if procs, _ := g.Procs(); len(procs) != 0 {
			t.Errorf("after start %s the group holds %v", tc.path, procs)
		}
	}
	// Not found on $PATH: os/exec's own error, before anything starts.
	if err := g.Start(exec.Command("gk-no-such-command")); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("start gk-no-such-command: %v, want %v", err, exec.ErrNotFound)
	}
}

// When the move into the group fails, the command never runs: it would
// have made a file.
func TestStartJoinedNeverRunsOutside(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	c := child("touch", marker)
	err := startJoined(c, filepath.Join(dir, "no-such-group", cgroupProcs))
	if err == nil {
		c.Wait()
		t.Fatal("start into a group that does not exist succeeded")
	}
	if !strings.Contains(err.Error(), "move the child into its group") || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %q: want the failed move named, not a command not found", err)
	}
	// The shim is killed and reaped (checked below) before startJoined
	// returns: had the command run, its marker would be there now.
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran although it was never moved into its group")
	}
	if c.ProcessState == nil || c.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the shim was not killed and reaped: %v", c.ProcessState)
	}
}

// A shim whose guardrun gives up before saying go exits without running
// the command.
func TestStartJoinedShimWithoutGoRunsNothing(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	argv := testchild.Command("touch", marker)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "join")
	c := exec.Command("/proc/self/exe", append([]string{argv[0]}, argv...)...)
	c.Args[0] = "gk-shim"
	c.Env = append(testchild.Environ(), joinEnv+"=3")
	c.ExtraFiles = []*os.File{theirs}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	unix.Close(fds[0]) // guardrun gives up: EOF
	err = c.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 125 {
		t.Fatalf("shim without go: %v, want exit 125", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the shim ran the command without being told to")
	}
}

func TestCheckProbeRunsInside(t *testing.T) {
	g := openAs(t, "gk", "", Limits{Ceiling: 64 << 20})
	p, err := Prove(g)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := insideLines(g)
	if p.Pid == 0 || p.Inside != want[map[string]string{"v1": "memory", "v2": ""}[g.Backend()]] {
		t.Fatalf("proof %+v, want the child inside %v", p, want)
	}
	if g.Backend() == "v2" && !p.Notified {
		t.Fatalf("no inotify event on cgroup.events: %v", p.NotifyErr)
	}
	t.Logf("probe child %d inside %s: %s", p.Pid, p.Inside, p.How)
}

func TestCheckProbeJoined(t *testing.T) {
	g := openAs(t, "gk", "v2", Limits{Ceiling: 64 << 20})
	forceJoin(t, g)
	p, err := Prove(g)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.How, "guardrun's own binary") || !p.Notified {
		t.Fatalf("proof %+v", p)
	}
}

// On this kernel (6.18 on the host, 6.1 in the VM) every feature guardrun
// uses is there, save those that depend on how it was booted or built.
func TestFeaturesOnThisKernel(t *testing.T) {
	g := openAs(t, "gk", "", Limits{Ceiling: 64 << 20})
	p, err := Prove(g)
	if err != nil {
		t.Fatal(err)
	}
	optional := map[string]bool{
		"memory.swap.max":             true, // swap accounting is a build and boot choice
		"memory.memsw.limit_in_bytes": true,
		"pids hierarchy":              Discover().V1Pids == "",
	}
	for _, f := range Features(g, p) {
		t.Logf("%-42s %-6s have=%v %s", f.Name, f.Since, f.Have, f.Why)
		if f.Since == "" || f.Without == "" {
			t.Errorf("%s: no release or no fallback said", f.Name)
		}
		if !f.Have && !optional[f.Name] {
			t.Errorf("%s (Linux %s) is missing on Linux %s: %s", f.Name, f.Since, KernelRelease(), f.Why)
		}
	}
}

// Kill leaves nothing in the group, grandchildren included: by
// cgroup.kill where the kernel has it (as here), else by killAll.
func TestFeatureKillEmptiesTheGroup(t *testing.T) {
	g := openAs(t, "gk", "v2", Limits{Ceiling: 256 << 20})
	pidfile := filepath.Join(t.TempDir(), "pids")
	c := child("tree", "3", pidfile)
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	testchild.WaitFile(t, pidfile)
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	for i := 0; ; i++ {
		procs, _ := g.Procs()
		if len(procs) == 0 {
			break
		}
		if i == 100 {
			t.Fatalf("left after Kill: %v", procs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// What the join start costs against the clone, per start and wait of a
// child that exits at once (run in the VM: -test.bench=StartV2).
func BenchmarkStartV2Cloned(b *testing.B) { benchStart(b, false) }
func BenchmarkStartV2Joined(b *testing.B) { benchStart(b, true) }

func benchStart(b *testing.B, join bool) {
	g := openAs(b, "gk", "v2", Limits{Ceiling: 128 << 20})
	if join {
		forceJoin(b, g)
	}
	for b.Loop() {
		c := child("exit", "0")
		if err := g.Start(c); err != nil {
			b.Fatal(err)
		}
		if err := c.Wait(); err != nil {
			b.Fatal(err)
		}
	}
}
