package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
	"golang.org/x/sys/unix"
)

// TestStdioFloodLosesNothing: a child writing at full speed to stdout and
// stderr at once through guardrun: every byte arrives, in order.
func TestStdioFloodLosesNothing(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "")
	const mib = 64
	exe, _ := os.Executable()
	c := guardrunCmd(exe, []string{"-q", "--max", "256M", "--name", "flood"}, "flood", "64")
	stdout, _ := c.StdoutPipe()
	stderr, _ := c.StderrPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var errBuf bytes.Buffer
	errDone := make(chan struct{})
	go func() { io.Copy(&errBuf, stderr); close(errDone) }()
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i % 251)
	}
	got := make([]byte, 1<<20)
	for i := range mib {
		if _, err := io.ReadFull(stdout, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("stdout MiB %d: %v, or not the pattern", i, err)
		}
	}
	if n, _ := io.Copy(io.Discard, stdout); n != 0 {
		t.Fatalf("%d bytes more than written", n)
	}
	<-errDone
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	if errBuf.Len() != mib<<20 || !bytes.Equal(errBuf.Bytes()[:1<<20], want) {
		t.Fatalf("stderr carried %d bytes, want %d", errBuf.Len(), mib<<20)
	}
}

// TestCeilingBelowStartupNeed: a ceiling the child cannot even start in is
// an OOM kill named as such, at once, not a hang.
func TestCeilingBelowStartupNeed(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "")
	exe, _ := os.Executable()
	c := guardrunCmd(exe, []string{"--max", "1M", "--name", "tiny"}, "alloc", "8")
	out, _ := c.CombinedOutput()
	if c.ProcessState.ExitCode() != 137 || !strings.Contains(string(out), "guardrun: tiny was killed by the kernel OOM killer at its 1 MiB ceiling") {
		t.Fatalf("exit %d:\n%s", c.ProcessState.ExitCode(), out)
	}
}

// TestReadOnlyCgroupFilesystemV2: a read-only cgroup mount (as Docker gives
// an unprivileged container): --cgroup v2 is refused with the reason, and
// auto falls back to sampling with a warning that says why.
func TestReadOnlyCgroupFilesystemV2(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "v2")
	exe, _ := os.Executable()
	for _, tc := range []struct {
		backend string
		code    int
		want    string
	}{
		{"v2", 125, ": read-only file system\nguardrun: hint: "},
		{"auto", 0, `msg="no cgroup: the ceiling is enforced best-effort by sampling RSS`},
	} {
		c := guardrunCmd(exe, []string{"--max", "64M", "--cgroup", tc.backend, "--name", "ro"}, "exit", "0")
		c.Env = append(c.Env, mountCgroup2+"=ro")
		c.SysProcAttr = &syscall.SysProcAttr{Unshareflags: unix.CLONE_NEWNS}
		out, _ := c.CombinedOutput()
		if c.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("--cgroup %s on a read-only cgroupfs: exit %d, want %d and %q:\n%s", tc.backend, c.ProcessState.ExitCode(), tc.code, tc.want, out)
		}
	}
}
