package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/observe"
)

// lockedBuffer is a guardrun's stderr, read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestControlOtherUserRoot: the control socket answers the run's own user
// and root, nobody else (issue 15). guardrun runs as uid 65534 (nobody),
// with no cgroup, as a user's guardrun would; uid 1000 is refused by the
// socket's mode and, with the mode loosened, by SO_PEERCRED, and the run
// is untouched; uid 65534 and root restart it; uid 65534 stops it. It
// needs root to run processes as those users.
func TestControlOtherUserRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs guardrun as uid 65534 and its callers as uid 1000 and 0")
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1) for the child")
	}
	// The test binary as guardrun (testscript.Main runs it by its name),
	// where the other users can run it.
	dir, err := os.MkdirTemp("", "guardrun-control-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "guardrun")
	self, _ := os.Executable()
	copyFile(t, self, bin)
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(state, 65534, 65534)

	const name = "ts-ctl-other"
	as := func(uid uint32) *syscall.SysProcAttr {
		return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=/"}
	g := exec.Command(bin, "--cgroup", "none", "--state-dir", state, "--name", name, "--restart", "always", "--", sleep, "1h")
	g.SysProcAttr, g.Env = as(65534), env
	var log lockedBuffer
	g.Stderr = &log
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer g.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- g.Wait() }()

	sock := filepath.Join(state, name+".sock")
	st := waitState(t, filepath.Join(state, name+".json"), func(st observe.State) bool { return st.Phase == observe.PhaseRunning }, &log)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("control socket %s: %v, %v", sock, fi.Mode(), err)
	}
	ctl := func(uid uint32, args ...string) (int, string, string) {
		t.Helper()
		c := exec.Command(bin, append([]string{args[0], "--state-dir", state}, args[1:]...)...)
		c.SysProcAttr, c.Env = as(uid), env
		var out, errOut bytes.Buffer
		c.Stdout, c.Stderr = &out, &errOut
		err := c.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%v: %v", args, err)
		}
		return c.ProcessState.ExitCode(), out.String(), errOut.String()
	}

	// Another user cannot connect: the socket is 0600.
	code, _, stderr := ctl(1000, "restart", name)
	if code != exitRefused || !strings.Contains(stderr, "guardrun: error: permission denied: "+name+" belongs to uid 65534\n") {
		t.Fatalf("uid 1000: exit %d, stderr %q; want 4 and permission denied", code, stderr)
	}
	// With the mode loosened, the run refuses by the caller's credentials.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = ctl(1000, "restart", name)
	if code != exitRefused || !strings.Contains(stderr, "guardrun: error: refused: uid 1000 pid ") ||
		!strings.Contains(stderr, "is neither the user of "+name+" (uid 65534) nor root") {
		t.Fatalf("uid 1000 on a 0666 socket: exit %d, stderr %q; want 4 and refused", code, stderr)
	}
	if code, _, _ = ctl(1000, "signal", name, "KILL"); code != exitRefused {
		t.Fatalf("uid 1000 signal: exit %d, want 4", code)
	}
	if !strings.Contains(log.String(), `msg="control: refused a request from another user" run=`+name+` by="uid 1000 pid `) {
		t.Fatalf("no refusal in guardrun's log:\n%s", log.String())
	}
	if now := readState(t, filepath.Join(state, name+".json")); now.Pid != st.Pid || now.Restarts != 0 {
		t.Fatalf("the run was touched: pid %d -> %d, restarts %d", st.Pid, now.Pid, now.Restarts)
	}

	// The run's own user and root restart it.
	for i, uid := range []uint32{65534, 0} {
		code, stdout, stderr := ctl(uid, "restart", name)
		if code != 0 || !strings.HasPrefix(stdout, "restarted "+name+" (pid ") {
			t.Fatalf("uid %d: exit %d, stdout %q, stderr %q", uid, code, stdout, stderr)
		}
		now := waitState(t, filepath.Join(state, name+".json"), func(s observe.State) bool {
			return s.Phase == observe.PhaseRunning && s.Restarts == i+1
		}, &log)
		lr := now.LastRestart
		if lr == nil || lr.Why != "asked" || lr.ByUid == nil || *lr.ByUid != uid {
			t.Fatalf("uid %d: last restart %+v", uid, lr)
		}
	}

	// Its own user stops it, as a TERM would.
	code, stdout, stderr := ctl(65534, "stop", name)
	if code != 0 || stdout != "stopped "+name+" (guardrun exits 143)\n" {
		t.Fatalf("stop: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Fatalf("guardrun ended %v, want by SIGTERM (exit 143)\n%s", err, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("guardrun did not end after stop\n%s", log.String())
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the control socket is left: %v", err)
	}
}

func readState(t *testing.T, path string) observe.State {
	t.Helper()
	var st observe.State
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		t.Fatalf("state %s: %v", path, err)
	}
	return st
}

// waitState waits, bounded, for the state file to satisfy ok.
func waitState(t *testing.T, path string, ok func(observe.State) bool, log *lockedBuffer) observe.State {
	t.Helper()
	var st observe.State
	for range 1000 {
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &st) == nil && ok(st) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("state %s did not come to pass within 10s: %+v\n%s", path, st, log.String())
	return st
}
