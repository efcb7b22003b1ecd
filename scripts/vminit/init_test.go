package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hogEnv makes the test binary, re-executed as a child, allocate and touch
// that many bytes instead of running tests.
const hogEnv = "VMINIT_TEST_HOG_BYTES"

func TestMain(m *testing.M) {
	if s := os.Getenv(hogEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hog:", err)
			os.Exit(3)
		}
		buf := make([]byte, n)
		for i := 0; i < len(buf); i += 4096 {
			buf[i] = 1 // touch every page so it is charged to the group
		}
		fmt.Printf("hog: survived holding %d bytes\n", len(buf))
		os.Exit(0)
	}
	if os.Getenv(orphanEnv) != "" {
		// Start a grandchild that outlives us, so it is re-parented to init.
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), orphanEnv+"=", sleepEnv+"=300ms")
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "orphan:", err)
			os.Exit(3)
		}
		fmt.Println(c.Process.Pid)
		os.Exit(0)
	}
	if s := os.Getenv(sleepEnv); s != "" {
		d, _ := time.ParseDuration(s)
		time.Sleep(d)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	orphanEnv = "VMINIT_TEST_ORPHAN"
	sleepEnv  = "VMINIT_TEST_SLEEP"
)

// TestInitReapsOrphans checks that a process re-parented to init does not
// stay a zombie after it exits.
func TestInitReapsOrphans(t *testing.T) {
	if os.Getenv("GUARDRUN_TEST_BACKEND") != "v2" || os.Getppid() != 1 {
		t.Skip("runs only as a child of vminit in the scripts/vmtest VM")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), orphanEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(out))
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if errors.Is(err, os.ErrNotExist) {
			return // exited and reaped
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %s not reaped after 10s: %q, %v", pid, stat, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSplitCmdline(t *testing.T) {
	got := splitCmdline("console=ttyS0 vmtest.args=\"-test.short -test.failfast\" vmtest.run=^TestA$ quiet\n")
	want := []string{"console=ttyS0", "vmtest.args=-test.short -test.failfast", "vmtest.run=^TestA$", "quiet"}
	if !slices.Equal(got, want) {
		t.Fatalf("splitCmdline = %q, want %q", got, want)
	}
}

// TestCgroupV2MemoryOOM is a smoke test of the VM itself: cgroup v2 with the
// memory and pids controllers enabled by init, and memory.max OOM-killing a
// process that was cloned straight into a group.
func TestCgroupV2MemoryOOM(t *testing.T) {
	if os.Getenv("GUARDRUN_TEST_BACKEND") != "v2" {
		t.Skip("GUARDRUN_TEST_BACKEND is not v2; this runs in the scripts/vmtest VM")
	}
	const root = "/sys/fs/cgroup"
	for _, f := range []string{"cgroup.controllers", "cgroup.subtree_control"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"memory", "pids"} {
			if !slices.Contains(strings.Fields(string(b)), c) {
				t.Fatalf("%s = %q, lacks %s", f, b, c)
			}
		}
	}

	dir := filepath.Join(root, fmt.Sprintf("vminit-smoke-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove group: %v", err)
		}
	})
	writeFile(t, filepath.Join(dir, "memory.max"), "64M")
	if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
		writeFile(t, filepath.Join(dir, "memory.swap.max"), "0")
	}
	fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), hogEnv+"="+strconv.Itoa(128<<20))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("hog of 128 MiB under memory.max=64M: err = %v, want killed", err)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hog ended with %v, want SIGKILL", ee)
	}
	if n := eventCount(t, filepath.Join(dir, "memory.events"), "oom_kill"); n != 1 {
		t.Fatalf("memory.events oom_kill = %d, want 1", n)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0); err != nil {
		t.Fatal(err)
	}
}

func eventCount(t *testing.T, path, key string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == key {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s: no %s line", path, key)
	return 0
}
