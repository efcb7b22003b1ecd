package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
	"github.com/guardrun/guardrun/observe"
)

// TestPendingAlertArrivesOnceWhenTheReceiverIsBack is issue 11's lost
// alert, with the real guardrun (the test binary as `guardrun` in $PATH,
// set up by testscript.Main) and a real receiver: down for a whole run
// that ends in an OOM kill, so past every retry; then a later guardrun of
// the name starts, still against a dead receiver, and status counts the
// alert; then the receiver comes up on the same port, and the alert
// arrives, once.
func TestPendingAlertArrivesOnceWhenTheReceiverIsBack(t *testing.T) {
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // down until the test listens again
	name := fmt.Sprintf("grtest-pending-%d", os.Getpid())
	guardrun := func(args ...string) *exec.Cmd {
		c := exec.Command("guardrun", append([]string{"--name", name, "--state-dir", state, "--notify", "http://" + addr + "/hook/s3cret"}, args...)...)
		c.Dir = dir
		return c
	}

	// The first run: OOM-killed, its alert never delivered.
	out, err := guardrun("--max", "64M", "--report", "r1.json", "--", "child", "leak", "4").CombinedOutput()
	if code := exitCode(err); code != 137 {
		t.Fatalf("first run exited %d, want 137:\n%s", code, out)
	}
	if rep := readReport(t, filepath.Join(dir, "r1.json")); rep.PendingNotifications != 1 {
		t.Fatalf("first run's report: pending_notifications %d, want 1", rep.PendingNotifications)
	}
	if bytes.Contains(out, []byte("s3cret")) {
		t.Fatalf("the target's token is in the log:\n%s", out)
	}
	kept := filepath.Join(state, "pending", name)
	checkPrivate(t, kept, 0o700)
	checkPrivate(t, filepath.Dir(kept), 0o700)
	files, _ := filepath.Glob(filepath.Join(kept, "*"))
	if len(files) != 1 {
		t.Fatalf("kept %v, want one file", files)
	}
	checkPrivate(t, files[0], 0o600)
	if b, _ := os.ReadFile(files[0]); strings.Contains(files[0]+string(b), "s3cret") || !strings.Contains(string(b), `"kind": "oom_kill"`) {
		t.Fatalf("kept file %s:\n%s", files[0], b)
	}

	// The next run of the name: status counts what it found.
	ready := filepath.Join(dir, "ready")
	second := guardrun("--max", "64M", "--report", "r2.json", "--", "child", "ready", ready, "1m")
	var stderr syncBuffer
	second.Stderr = &stderr
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	defer second.Process.Kill()
	testchild.WaitFile(t, ready)
	waitPending(t, state, name, 1)

	// The receiver is back, on the same port: the alert comes, once,
	// within the backoff (1s, doubling), and the count goes to 0.
	got := make(chan []byte, 10)
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s again: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- b
	})}
	go srv.Serve(l)
	defer srv.Close()
	var body []byte
	select {
	case body = <-got:
	case <-time.After(20 * time.Second):
		t.Fatalf("the kept alert did not arrive within 20s:\n%s", stderr.String())
	}
	if !strings.Contains(string(body), `"kind":"oom_kill","status":"firing","severity":"critical","count":1,`) || !strings.Contains(string(body), `"run":"`+name+`"`) {
		t.Fatalf("receiver got %s", body)
	}
	waitPending(t, state, name, 0)
	second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); exitCode(err) != 143 {
		t.Fatalf("second run: %v, want SIGTERM's 143:\n%s", err, stderr.String())
	}
	if rep := readReport(t, filepath.Join(dir, "r2.json")); rep.PendingNotifications != 0 {
		t.Fatalf("second run's report: pending_notifications %d, want 0", rep.PendingNotifications)
	}
	select {
	case b := <-got:
		t.Fatalf("the alert arrived twice; again: %s", b)
	default:
	}
	if files, _ := filepath.Glob(filepath.Join(kept, "*")); len(files) != 0 {
		t.Fatalf("left in %s: %v", kept, files)
	}
	for _, root := range []string{h.V2, h.V1Memory, h.V1Pids} {
		if p := filepath.Join(root, "guardrun", name); root != "" && fileExists(p) {
			t.Errorf("%s is left behind", p)
		}
	}
}

// exitCode is a finished command's status as a shell says it: 128+N for
// death by signal N.
func exitCode(err error) int {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		if err != nil {
			return -1
		}
		return 0
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

func readReport(t *testing.T, path string) observe.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep observe.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rep
}

// checkPrivate: path is this user's and its mode is mode exactly.
func checkPrivate(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode || fi.Mode()&os.ModeSymlink != 0 || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) {
		t.Fatalf("%s: mode %v, uid %d; want %v, uid %d", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, mode, os.Geteuid())
	}
}

// waitPending waits (bounded) until `guardrun status NAME --json` counts
// want pending notifications.
func waitPending(t *testing.T, state, name string, want int) {
	t.Helper()
	var last string
	for range 200 {
		out, err := exec.Command("guardrun", "status", "--state-dir", state, "--json", name).Output()
		var st observe.State
		if err == nil && json.Unmarshal(out, &st) == nil && st.PendingNotifications == want {
			return
		}
		last = string(out)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("status did not count %d pending notifications within 10s; last:\n%s", want, last)
}

// syncBuffer is a bytes.Buffer a command writes while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
