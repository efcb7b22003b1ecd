package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
	"golang.org/x/sys/unix"
)

// asGuardrun is set to make the test binary behave as guardrun itself, so
// a test can start it with attributes testscript cannot give (another
// user, another cgroup).
const asGuardrun = "GUARDRUN_TEST_AS_GUARDRUN"

// mountCgroup2 makes the test binary, before it acts as guardrun, mount a
// fresh cgroup2 at /sys/fs/cgroup, as a container runtime does inside a new
// cgroup and mount namespace: "1" read-write, "ro" read-only.
const mountCgroup2 = "GUARDRUN_TEST_MOUNT_CGROUP2"

func init() {
	if os.Getenv(asGuardrun) != "1" {
		return
	}
	os.Unsetenv(asGuardrun)
	if mode := os.Getenv(mountCgroup2); mode != "" {
		os.Unsetenv(mountCgroup2)
		flags := uintptr(0)
		if mode == "ro" {
			flags = unix.MS_RDONLY
		}
		// The same superblock cannot be mounted over itself (EBUSY):
		// detach the host's view first, in this mount namespace only.
		if err := unix.Unmount("/sys/fs/cgroup", unix.MNT_DETACH); err != nil {
			panic(err)
		}
		if err := unix.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", flags, ""); err != nil {
			panic(err)
		}
	}
	os.Exit(run(append([]string{"guardrun"}, os.Args[1:]...), os.Stdout, os.Stderr))
}

// guardrunCmd is guardrun (this test binary) running a test child.
func guardrunCmd(exe string, flags []string, mode string, args ...string) *exec.Cmd {
	argv := testchild.Command(mode, args...)
	argv[0] = exe
	c := exec.Command(exe, append(append(flags, "--"), argv...)...)
	c.Env = append(testchild.Environ(), asGuardrun+"=1")
	return c
}

// startCgroupV2 makes a cgroup at the v2 root for a test to start guardrun
// in, and an fd of it for CLONE_INTO_CGROUP. At the end it removes what
// guardrun leaves there by design (leaves, relative to dir), then dir.
func startCgroupV2(t *testing.T, name string, leaves ...string) (dir string, fd int) {
	t.Helper()
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "v2")
	dir = filepath.Join(h.V2, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(fd)
		for _, d := range append(leaves, "") {
			if err := os.Remove(filepath.Join(dir, d)); err != nil {
				t.Errorf("remove: %v", err)
			}
		}
	})
	return dir, fd
}

// TestDelegatedSubtreeV2: started inside a cgroup that systemd delegated to
// it (Delegate=yes sets trusted.delegate), guardrun makes its group there,
// beside a leaf it moves itself into, instead of at the hierarchy's root.
func TestDelegatedSubtreeV2(t *testing.T) {
	deleg, fd := startCgroupV2(t, "grtest-delegated.service", ".supervisor")
	if err := unix.Setxattr(deleg, "trusted.delegate", []byte("1"), 0); err != nil {
		t.Fatalf("mark %s delegated: %v", deleg, err)
	}
	exe, _ := os.Executable()
	c := guardrunCmd(exe, []string{"--max", "64M", "--name", "app"}, "cgroup")
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("guardrun: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "0::/grtest-delegated.service/app\n") {
		t.Fatalf("the child did not run in the delegated subtree:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(deleg, "app")); !os.IsNotExist(err) {
		t.Fatalf("the group was left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(deleg, ".supervisor")); err != nil {
		t.Fatalf("guardrun did not move itself into a leaf: %v", err)
	}
	// guardrun check, run where guardrun lives now (the unit's cgroup has
	// controllers on for its children, so no process may join it), says
	// where groups go, and why.
	leaf, err := unix.Open(filepath.Join(deleg, ".supervisor"), unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(leaf)
	ck := exec.Command(exe, "check")
	ck.Env = append(os.Environ(), asGuardrun+"=1")
	ck.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: leaf}
	out, err = ck.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v2 groups go to:   /sys/fs/cgroup/grtest-delegated.service/NAME, inside this cgroup, delegated to guardrun (Delegate=yes)") {
		t.Fatalf("check inside a delegated unit: %v\n%s", err, out)
	}
}

// TestContainerCgroupNamespaceV2: as PID 1 of a container with its own
// cgroup namespace, guardrun sees itself at "/" of a hierarchy whose root is
// not the kernel's, so the no-internal-process rule applies: it moves itself
// into a leaf and makes its groups beside it.
func TestContainerCgroupNamespaceV2(t *testing.T) {
	ctr, fd := startCgroupV2(t, "grtest-container", "guardrun/.supervisor", "guardrun")
	exe, _ := os.Executable()
	c := guardrunCmd(exe, []string{"--max", "64M", "--name", "app"}, "cgroup")
	c.Env = append(c.Env, mountCgroup2+"=1")
	// Cloned into the container's cgroup first, then unshared, so that
	// cgroup is the namespace's root.
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Unshareflags: unix.CLONE_NEWCGROUP | unix.CLONE_NEWNS}
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("guardrun: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "0::/guardrun/app\n") || !strings.Contains(string(out), "backend=v2 cgroup=/sys/fs/cgroup/guardrun/app ") {
		t.Fatalf("the child did not run in the namespace's /guardrun/app:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(ctr, "guardrun", "app")); !os.IsNotExist(err) {
		t.Fatalf("the group was left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ctr, "guardrun", ".supervisor")); err != nil {
		t.Fatalf("guardrun did not move itself into a leaf: %v", err)
	}
}

// TestNonRootFallsBackLoudly: a user who may not create a memory cgroup
// still gets a ceiling, enforced by sampling, with a warning that says why;
// asking for a cgroup backend outright is refused.
func TestNonRootFallsBackLoudly(t *testing.T) {
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	dir, exe := exeForAll(t)
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}

	c := guardrunCmd(exe, []string{"--max", "64M", "--name", "nobody"}, "leak", "2")
	c.SysProcAttr = nobody
	c.Dir = dir
	out, err := c.CombinedOutput()
	if c.ProcessState.ExitCode() != 137 {
		t.Fatalf("exit %v, want 137:\n%s", err, out)
	}
	for _, want := range []string{
		"level=WARN msg=\"no cgroup: the ceiling is enforced best-effort by sampling RSS",
		"guardrun: nobody was killed by guardrun (no cgroup: sampled RSS) at its 64 MiB ceiling",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// How far past the ceiling the leak (2 MiB every 10 ms) got before the
	// sampler caught it: what a kernel-enforced ceiling would have held at
	// 64 MiB.
	if m := regexp.MustCompile(`msg=exited .* peak=([0-9]+) `).FindSubmatch(out); m != nil {
		peak, _ := strconv.ParseUint(string(m[1]), 10, 64)
		t.Logf("without a cgroup, a leak of 200 MiB/s reached %d MiB under --max 64M (%.2fx the ceiling) before guardrun killed it", peak>>20, float64(peak)/float64(64<<20))
	} else {
		t.Errorf("no exited line with a peak in:\n%s", out)
	}

	c = guardrunCmd(exe, []string{"--max", "64M", "--cgroup", h.Version()}, "touch", filepath.Join(dir, "ran"))
	c.SysProcAttr = nobody
	out, _ = c.CombinedOutput()
	if c.ProcessState.ExitCode() != 125 || !strings.HasPrefix(string(out), "guardrun: error: ") || !strings.Contains(string(out), "guardrun: hint: ") {
		t.Fatalf("forced --cgroup %s as nobody: exit %d\n%s", h.Version(), c.ProcessState.ExitCode(), out)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Fatal("the child ran without the cgroup it was promised")
	}

	c = exec.Command(exe, "check")
	c.Env = append(os.Environ(), asGuardrun+"=1")
	c.SysProcAttr = nobody
	out, _ = c.CombinedOutput()
	if c.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "can enforce:       no: ") {
		t.Fatalf("check as nobody: exit %d, want 1 and a reason:\n%s", c.ProcessState.ExitCode(), out)
	}
}

// exeForAll copies the test binary where any user may run it (it sits in a
// 0700 build directory) into a directory any user may write to.
func exeForAll(t *testing.T) (dir, exe string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "guardrun-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	exe = filepath.Join(dir, "guardrun")
	self, _ := os.Executable()
	copyFile(t, self, exe)
	return dir, exe
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestUserDropsPrivileges: --user runs the child as that user, with its
// groups and no capabilities, while guardrun (root) still makes the group.
func TestUserDropsPrivileges(t *testing.T) {
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	dir, exe := exeForAll(t)
	c := guardrunCmd(exe, []string{"--max", "64M", "--user", "65534:65534", "--name", "user"}, "id")
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("guardrun: %v\n%s", err, out)
	}
	for _, want := range []string{"Uid: 65534 65534 65534 65534\n", "Gid: 65534 65534 65534 65534\n", "CapEff: 0000000000000000\n", "msg=started run=user", "backend=" + h.Version() + " cgroup=/"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "Groups: 0") {
		t.Errorf("the child kept root's supplementary groups:\n%s", out)
	}

	c = guardrunCmd(exe, []string{"--user", "no-such-user-here"}, "touch", filepath.Join(dir, "ran"))
	out, _ = c.CombinedOutput()
	if c.ProcessState.ExitCode() != 125 || !strings.HasPrefix(string(out), "guardrun: error: --user no-such-user-here: no such user\n") {
		t.Fatalf("unknown user: exit %d\n%s", c.ProcessState.ExitCode(), out)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Fatal("the child ran")
	}
}
