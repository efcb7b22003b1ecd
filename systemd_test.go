package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/proc"
	"github.com/guardrun/guardrun/internal/testchild"
)

// notifySocket is systemd's side of sd_notify: a real datagram socket.
func notifySocket(t *testing.T) (path string, msgs <-chan string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

// expect reads datagrams (bounded) until one contains want.
func expect(t *testing.T, msgs <-chan string, want string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-msgs:
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q from guardrun within 10s", want)
		}
	}
}

func TestSdNotifyReadyStatusWatchdogStopping(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "")
	sock, msgs := notifySocket(t)
	exe, _ := os.Executable()
	file := filepath.Join(t.TempDir(), "sig")
	c := guardrunCmd(exe, []string{"--max", "64M", "--name", "sd"}, "signals", file)
	c.Env = append(c.Env, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	ready := expect(t, msgs, "READY=1")
	if !strings.Contains(ready, fmt.Sprintf("MAINPID=%d", c.Process.Pid)) {
		t.Fatalf("READY without guardrun's MAINPID: %q", ready)
	}
	expect(t, msgs, "STATUS=sd started (pid ")
	for range 3 { // pinged at half of WatchdogSec while the child runs
		expect(t, msgs, "WATCHDOG=1")
	}
	testchild.WaitFile(t, file+".ready")
	c.Process.Signal(syscall.SIGTERM)
	expect(t, msgs, "STOPPING=1")
	if err := c.Wait(); err != nil {
		t.Fatalf("guardrun: %v", err)
	}
}

func TestSdNotifyRelaysTheChildsReadiness(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "")
	sock, msgs := notifySocket(t)
	exe, _ := os.Executable()
	c := guardrunCmd(exe, []string{"--max", "64M", "--name", "sdchild", "--notify-ready", "child"}, "sd-ready", "300ms")
	c.Env = append(c.Env, "NOTIFY_SOCKET="+sock)
	start := time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { c.Process.Signal(syscall.SIGTERM); c.Wait() }()
	expect(t, msgs, "STATUS=sdchild started")
	expect(t, msgs, "STATUS=warming up")
	expect(t, msgs, "READY=1")
	if since := time.Since(start); since < 300*time.Millisecond {
		t.Fatalf("READY=1 came %v after start, before the child said it", since)
	}
}

func TestJournalGetsPrioritiesAndNoTimestamps(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "")
	exe, _ := os.Executable()
	out, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	syscall.Fstat(int(out.Fd()), &st)
	c := guardrunCmd(exe, []string{"--max", "64M", "--name", "jr"}, "leak", "4")
	c.Env = append(c.Env, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	c.Stderr = out
	c.Run()
	b, _ := os.ReadFile(out.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, want := range []string{"<6>level=INFO msg=started run=jr", "<4>level=WARN msg=oom_kill run=jr", "<3>guardrun: jr was killed by the kernel OOM killer"} {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, want)
		}
		if !found {
			t.Errorf("no line starts %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), ">time=") {
		t.Errorf("lines carry their own timestamps:\n%s", b)
	}
}

// TestStopEndsGuardrunByTheSameSignal: a stop guardrun was asked for (TERM)
// and the child ended by it: guardrun ends by SIGTERM too, so a shell still
// sees 143 and systemd a clean stop, not a failed unit with exit 143.
func TestStopEndsGuardrunByTheSameSignal(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "")
	c, stderr := startReady(t, "stopsig")
	c.Process.Signal(syscall.SIGTERM)
	if ws := endOf(c); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("guardrun ended %v, want by SIGTERM:\n%s", c.ProcessState, stderr.String())
	}
	if !strings.Contains(stderr.String(), "guardrun: stopsig was stopped by signal 15 (SIGTERM), as asked") {
		t.Fatalf("summary:\n%s", stderr.String())
	}
}

// TestStopOfTheWholeGroupIsAStop: systemd stops a unit (KillMode=
// control-group) by sending TERM to the main process and then to every
// other process of the unit at once, so the child may die of the TERM
// before guardrun has read its own. That is still the stop systemd asked
// for: guardrun ends by SIGTERM (a clean stop to systemd), never with a
// plain exit 143 (a failed unit). Run many times: the order in which the
// two arrive is the kernel's and the scheduler's.
func TestStopOfTheWholeGroupIsAStop(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "")
	for i := range 30 {
		c, stderr := startReady(t, "groupstop")
		tree, err := proc.Tree(c.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, pid := range tree { // guardrun first, as systemd does
			syscall.Kill(pid, syscall.SIGTERM)
		}
		if ws := endOf(c); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Fatalf("stop %d: guardrun ended %v, want by SIGTERM:\n%s", i, c.ProcessState, stderr.String())
		}
	}
}

// startReady starts guardrun --max 64M over a sleeping child, as a unit of
// Type=notify, and returns once it said READY=1.
func startReady(t *testing.T, name string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	sock, msgs := notifySocket(t)
	exe, _ := os.Executable()
	c := guardrunCmd(exe, []string{"--max", "64M", "--name", name}, "sleep", "1h")
	c.Env = append(c.Env, "NOTIFY_SOCKET="+sock)
	stderr := new(strings.Builder)
	c.Stderr = stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	expect(t, msgs, "READY=1")
	return c, stderr
}

// endOf waits for c and says how it ended.
func endOf(c *exec.Cmd) syscall.WaitStatus {
	c.Wait()
	return c.ProcessState.Sys().(syscall.WaitStatus)
}
