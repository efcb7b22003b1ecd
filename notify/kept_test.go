package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/proc"
	"github.com/guardrun/guardrun/supervise"
)

// freeAddr is a loopback address nothing listens on, until a test
// listens on it itself: a receiver that is down, then up.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// receiverAt is newReceiver on a given address.
func receiverAt(t *testing.T, addr string) *receiver {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s again: %v", addr, err)
	}
	r := &receiver{got: make(chan struct{}, 100)}
	r.Server = &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, b)
		r.mu.Unlock()
		r.got <- struct{}{}
	})}}
	r.Start()
	t.Cleanup(r.Close)
	return r
}

func openKept(t *testing.T, dir string) *Kept {
	t.Helper()
	k, err := OpenKept(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// keptRun is one guardrun's notifier against a sink, keeping in dir.
func keptRun(t *testing.T, dir string, sinks ...Sink) (*Notifier, *Kept) {
	k := openKept(t, dir)
	cfg := fast(sinks...)
	cfg.Kept, cfg.KeptRetry = k, 10*time.Millisecond
	return New(cfg), k
}

func kinds(ns []Notification) string {
	var s []string
	for _, n := range ns {
		s = append(s, n.Kind)
	}
	return strings.Join(s, ",")
}

// Issue 11: the receiver was down for longer than the retries, the OOM
// kill was lost for good, and a later minor alert went out once the
// receiver was back. Now the OOM kill is kept, the warning is not, and
// the next guardrun of the name delivers the OOM kill, once.
func TestCriticalIsKeptAndTheNextRunDeliversItOnce(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	target := "http://" + addr + "/hook/s3cret"

	n, k := keptRun(t, dir, sink(t, target, ""))
	n.Observe(oom("app", 0))
	n.Observe(supervise.Event{Kind: supervise.PressureStall, Run: "app", Trigger: "some 100000 1000000"})
	if r := n.Close(5 * time.Second); r.Kept != 1 || r.Undelivered != 1 || r.Delivered != 0 {
		t.Fatalf("first run: report %+v; want the oom_kill kept and the pressure stall lost", r)
	}
	k.Close()
	if c := CountKept(dir); c != 1 {
		t.Fatalf("%d kept files, want 1", c)
	}

	rec := receiverAt(t, addr)
	n, _ = keptRun(t, dir, sink(t, target, ""))
	rec.wait(t, 1)
	r := n.Close(5 * time.Second)
	if got := rec.notifications(t); kinds(got) != "oom_kill" || got[0].Run != "app" || got[0].Count != 1 || r.Delivered != 1 || r.Kept != 0 {
		t.Fatalf("second run: receiver got %q, report %+v; want the oom_kill once", kinds(got), r)
	}
	if c := CountKept(dir); c != 0 {
		t.Fatalf("%d kept files left after delivery", c)
	}
}

// Within one run: what the retries missed is retried with a backoff of its
// own until the receiver is back, and goes before anything newer.
func TestHeldIsRetriedUntilTheReceiverIsBack(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n, _ := keptRun(t, dir, sink(t, "http://"+addr+"/hook", ""))
	n.Observe(oom("app", 0))
	// The retries (3 tries 10ms apart) are spent against the closed port
	// once the file is there and the first try has failed; wait for the
	// log line's effect rather than a time: the held list.
	w := n.sinks[0]
	for i := 0; ; i++ {
		w.mu.Lock()
		held := len(w.held)
		w.mu.Unlock()
		if held == 1 {
			break
		}
		if i == 1000 {
			t.Fatal("the oom_kill was not held within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rec := receiverAt(t, addr)
	rec.wait(t, 1)
	n.Observe(supervise.Event{Kind: supervise.PressureStall, Run: "app", Trigger: "some 100000 1000000"})
	rec.wait(t, 1)
	r := n.Close(5 * time.Second)
	if got := kinds(rec.notifications(t)); got != "oom_kill,pressure" || r.Delivered != 2 || r.Kept+r.Undelivered != 0 {
		t.Fatalf("receiver got %q, report %+v", got, r)
	}
	if c := CountKept(dir); c != 0 {
		t.Fatalf("%d kept files left after delivery", c)
	}
}

// Each sink keeps its own: a target that was down does not get what another
// missed, and a later run with other targets leaves them where they are.
func TestEachTargetKeepsItsOwn(t *testing.T) {
	dir, down := t.TempDir(), freeAddr(t)
	up := newReceiver(t, 200)
	n, k := keptRun(t, dir, sink(t, "http://"+down+"/a", ""), sink(t, up.URL+"/b", ""))
	n.Observe(oom("app", 0))
	up.wait(t, 1)
	if r := n.Close(5 * time.Second); r.Kept != 1 || r.Delivered != 1 {
		t.Fatalf("report %+v", r)
	}
	k.Close()
	n, _ = keptRun(t, dir, sink(t, up.URL+"/b", ""))
	if r := n.Close(5 * time.Second); r.Delivered != 0 || len(up.notifications(t)) != 1 || CountKept(dir) != 1 {
		t.Fatalf("a run without the down target delivered what it kept: report %+v, %d at the up one", r, len(up.notifications(t)))
	}
}

// The kept file is the owner's alone, holds no secret in its name or
// content, and is written by replacing what is at its path: a symlink
// planted there is replaced, not followed.
func TestKeptFileIsPrivateAndReplacesAPlantedSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("untouched\n"), 0o644)
	target := "https://hooks.slack.com/services/T000/B000/s3cret"
	k := openKept(t, dir)
	now := time.Unix(1_800_000_000, 42)
	k.now = func() time.Time { return now }
	s := sink(t, target, "")
	q := k.queue(s)
	sum := sha256.Sum256([]byte(target))
	path := filepath.Join(dir, fmt.Sprintf("%s-%019d.json", hex.EncodeToString(sum[:8]), now.UnixNano()))
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}

	d := newDedup()
	file, _, err := q.keep(d.Observe(oom("app", 0), at(0))[0])
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Join(dir, file) != path {
		t.Fatalf("kept as %s, want %s", file, path)
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, %v; want a regular file, mode 0600", path, fi.Mode(), err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "untouched\n" {
		t.Fatalf("the write went through the symlink: victim holds %q", b)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "s3cret") || strings.Contains(file, "s3cret") || strings.Contains(string(b), "/services/") {
		t.Fatalf("the target's token is on disk: %s: %s", file, b)
	}
	if !strings.Contains(string(b), `"schema": "`+KeptSchema+`"`) || !strings.Contains(string(b), `"sink": "https://hooks.slack.com/…"`) {
		t.Fatalf("kept file:\n%s", b)
	}
	if x, err := q.load(file); err != nil || x.Kind != "oom_kill" || x.Severity != Critical {
		t.Fatalf("load: %+v, %v", x, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("left in the directory: %v", ents)
	}
}

// At most maxKept per sink: the oldest go, and are said.
func TestKeptIsBounded(t *testing.T) {
	dir := t.TempDir()
	k := openKept(t, dir)
	q := k.queue(sink(t, "http://127.0.0.1:1/x", ""))
	var first []string
	var dropped []string
	for i := range maxKept + 5 {
		f, gone, err := q.keep(Notification{Kind: "oom_kill", Severity: Critical, Count: i})
		if err != nil {
			t.Fatal(err)
		}
		if i < 5 {
			first = append(first, f)
		}
		if gone != "" {
			dropped = append(dropped, gone)
		}
	}
	if CountKept(dir) != maxKept || strings.Join(dropped, " ") != strings.Join(first, " ") {
		t.Fatalf("%d kept, dropped %v; want %d, the first five %v", CountKept(dir), dropped, maxKept, first)
	}
	if held := q.held(); len(held) != maxKept {
		t.Fatalf("held %d", len(held))
	}
	if x, _ := q.load(q.held()[0]); x.Count != 5 {
		t.Fatalf("oldest kept is #%d, want #5", x.Count)
	}
}

// One guardrun of a name at a time keeps and re-sends: a second would
// send the same kept notification again.
func TestKeptDirectoryIsLocked(t *testing.T) {
	dir := t.TempDir()
	k := openKept(t, dir)
	if _, err := OpenKept(dir); err == nil || !strings.Contains(err.Error(), "another guardrun of this name holds them") {
		t.Fatalf("second open: %v", err)
	}
	k.Close()
	openKept(t, dir)
	// Two sinks with one target share a queue's files: the second keeps
	// none, or both would deliver them.
	k2 := openKept(t, t.TempDir())
	if k2.queue(sink(t, "http://x/a", "")) == nil || k2.queue(sink(t, "slack+http://x/a", "")) != nil {
		t.Fatal("a target given twice got two queues")
	}
}

// A symlink in place of the directory is refused, not followed.
func TestKeptDirectoryIsNotASymlink(t *testing.T) {
	real, link := t.TempDir(), filepath.Join(t.TempDir(), "pending")
	os.Symlink(real, link)
	if _, err := OpenKept(link); err == nil {
		t.Fatal("opened a symlinked directory")
	}
}

// The exec sink kills the hook's whole process group at the timeout: a
// hook that started something slow leaves nothing behind.
func TestExecTimeoutKillsTheHooksGroup(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "pid")
	s := NewExecSink("sleep 60 & echo $! > " + pidfile + "; wait")
	cfg := fast(s)
	cfg.Timeout, cfg.Retries = 300*time.Millisecond, 0
	n := New(cfg)
	n.Observe(oom("app", 0))
	if r := n.Close(5 * time.Second); r.Undelivered != 1 {
		t.Fatalf("report %+v", r)
	}
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	for i := 0; ; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			break
		}
		if st, err := proc.ReadStat(pid); err == nil && st.State == 'Z' {
			break // killed; its parent, the shell, is gone, so init reaps it
		}
		if i == 500 {
			t.Fatalf("the hook's sleep %d outlived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
