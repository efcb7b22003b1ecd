package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
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

func init() {
	if os.Getenv(asGuardrun) == "1" {
		os.Unsetenv(asGuardrun)
		os.Exit(run(append([]string{"guardrun"}, os.Args[1:]...), os.Stdout, os.Stderr))
	}
}

// guardrunCmd is guardrun (this test binary) running a test child.
func guardrunCmd(exe string, flags []string, mode string, args ...string) *exec.Cmd {
	argv := testchild.Command(mode, args...)
	argv[0] = exe
	c := exec.Command(exe, append(append(flags, "--"), argv...)...)
	c.Env = append(testchild.Environ(), asGuardrun+"=1")
	return c
}

// TestDelegatedSubtreeV2: started inside a cgroup that systemd delegated to
// it (Delegate=yes sets trusted.delegate), guardrun makes its group there,
// beside a leaf it moves itself into, instead of at the hierarchy's root.
func TestDelegatedSubtreeV2(t *testing.T) {
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "v2")
	deleg := filepath.Join(h.V2, "grtest-delegated.service")
	if err := os.Mkdir(deleg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.Remove(filepath.Join(deleg, ".supervisor"))
		if err := os.Remove(deleg); err != nil {
			t.Errorf("remove %s: %v", deleg, err)
		}
	}()
	if err := unix.Setxattr(deleg, "trusted.delegate", []byte("1"), 0); err != nil {
		t.Fatalf("mark %s delegated: %v", deleg, err)
	}
	fd, err := unix.Open(deleg, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
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
}

// TestNonRootFallsBackLoudly: a user who may not create a memory cgroup
// still gets a ceiling, enforced by sampling, with a warning that says why;
// asking for a cgroup backend outright is refused.
func TestNonRootFallsBackLoudly(t *testing.T) {
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	// The test binary sits in a 0700 build directory; give nobody a copy.
	dir, err := os.MkdirTemp("", "guardrun-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	exe := filepath.Join(dir, "guardrun")
	self, _ := os.Executable()
	copyFile(t, self, exe)
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

func copyFile(t *testing.T, from, to string) {
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
