package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/proc"
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

// TestCeilingBelowStartupNeed: a ceiling the child cannot even start in
// (the test binary with 16 MiB to touch, at the least ceiling guardrun
// takes, cgroup.MinCeiling) is an OOM kill named as such, at once, not a
// hang.
func TestCeilingBelowStartupNeed(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "")
	exe, _ := os.Executable()
	c := guardrunCmd(exe, []string{"--max", "8M", "--name", "tiny"}, "alloc", "16")
	out, _ := c.CombinedOutput()
	if c.ProcessState.ExitCode() != 137 || !strings.Contains(string(out), "guardrun: tiny was killed by the kernel OOM killer at its 8 MiB ceiling") {
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

// TestSIGKILLAtRandomPoints: guardrun killed by SIGKILL at a random moment
// of its life (starting, running, backing off, stopping). Its child never
// outlives it (parent-death signal); what the child forked dies with the
// group, by the sentinel once it runs (100 ms into a child's life), else
// by the next start of the name, which also leaves no group behind.
func TestSIGKILLAtRandomPoints(t *testing.T) {
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	exe, _ := os.Executable()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	bySentinel, byNextStart := 0, 0
	for i := range 9 {
		dir := t.TempDir()
		name := fmt.Sprintf("ts-rk%d-%d", i, os.Getpid())
		pids := filepath.Join(dir, "pids")
		var c *exec.Cmd
		switch i % 3 {
		case 0: // running, with grandchildren
			c = guardrunCmd(exe, []string{"-q", "--max", "128M", "--name", name}, "tree", "2", pids)
		case 1: // restarting: each child leaves a daemon and exits 1
			c = guardrunCmd(exe, []string{"-q", "--max", "128M", "--restart", "always", "--backoff-min", "150ms", "--max-restarts", "0", "--name", name}, "daemon", pids)
		case 2: // stopping a child that ignores TERM
			c = guardrunCmd(exe, []string{"-q", "--max", "128M", "--stop-timeout", "1h", "--name", name}, "ignore", pids)
		}
		c.Stdout, c.Stderr = io.Discard, io.Discard
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		at := time.Duration(rng.IntN(500)) * time.Millisecond
		if i%3 == 2 {
			time.Sleep(at / 2)
			c.Process.Signal(syscall.SIGTERM)
			at /= 2
		}
		time.Sleep(at)
		sentinel := sentinelOf(c.Process.Pid)
		c.Process.Kill()
		c.Wait()
		left := func() []int {
			var alive []int
			for _, f := range []string{pids, pids + ".pid"} {
				b, _ := os.ReadFile(f)
				for _, p := range strings.Fields(string(b)) {
					pid, _ := strconv.Atoi(p)
					for j := 0; j < 300 && testchild.Alive(pid); j++ {
						time.Sleep(10 * time.Millisecond)
					}
					if testchild.Alive(pid) {
						alive = append(alive, pid)
					}
				}
			}
			return alive
		}
		// The child itself dies with guardrun, always.
		if b, err := os.ReadFile(pids + ".pid"); err == nil {
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			for j := 0; j < 300 && testchild.Alive(pid); j++ {
				time.Sleep(10 * time.Millisecond)
			}
			if testchild.Alive(pid) {
				t.Errorf("round %d (kill at %s): child %d outlived guardrun", i, at, pid)
			}
		}
		if sentinel {
			if alive := left(); len(alive) > 0 {
				t.Errorf("round %d (kill at %s): the sentinel ran, yet %v live on", i, at, alive)
			}
			bySentinel++
		} else {
			byNextStart++
		}
		next := guardrunCmd(exe, []string{"-q", "--max", "64M", "--name", name}, "exit", "0")
		if out, err := next.CombinedOutput(); err != nil {
			t.Fatalf("round %d: the next start: %v\n%s", i, err, out)
		}
		if alive := left(); len(alive) > 0 {
			t.Errorf("round %d (kill at %s): %v live on after the next start", i, at, alive)
		}
		for _, root := range []string{h.V2, h.V1Memory, h.V1Pids} {
			if root == "" {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, "guardrun", name)); err == nil {
				t.Errorf("round %d: group %s left under %s", i, name, root)
			}
		}
	}
	t.Logf("cleaned by the sentinel: %d, by the next start: %d", bySentinel, byNextStart)
}

// sentinelOf reports whether guardrun pid has started its sentinel.
func sentinelOf(pid int) bool {
	kids, _ := proc.Children(pid)
	for _, k := range kids {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k)); strings.TrimRight(string(cmd), "\x00") == "guardrun-sentinel" {
			return true
		}
	}
	return false
}
