package notify

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
)

// receiver is a real HTTP receiver on 127.0.0.1 that records what it gets.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	got    chan struct{}
}

func newReceiver(t *testing.T, status int) *receiver {
	r := &receiver{got: make(chan struct{}, 100)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, b)
		r.mu.Unlock()
		w.WriteHeader(status)
		r.got <- struct{}{}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) notifications(t *testing.T) []Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ns []Notification
	for _, b := range r.bodies {
		var n Notification
		if err := json.Unmarshal(b, &n); err != nil {
			t.Fatalf("body %s: %v", b, err)
		}
		ns = append(ns, n)
	}
	return ns
}

// wait waits (bounded) for n more requests.
func (r *receiver) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-r.got:
		case <-time.After(10 * time.Second):
			t.Fatalf("receiver got no request within 10s")
		}
	}
}

func sink(t *testing.T, target, format string) Sink {
	t.Helper()
	s, err := ParseSink(target, format, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fast(sinks ...Sink) Config {
	return Config{Sinks: sinks, Window: 300 * time.Millisecond, Host: "vps1", Command: []string{"node", "app.js"},
		Timeout: 200 * time.Millisecond, Retries: 2, RetryBase: 10 * time.Millisecond}
}

func TestBurstIsOneNotificationAndOneSummaryThenResolved(t *testing.T) {
	rec := newReceiver(t, 200)
	n := New(fast(sink(t, rec.URL+"/hook", "")))
	n.Observe(supervise.Event{Kind: supervise.Started, Run: "app", Time: time.Now()})
	const k = 7
	for i := range k {
		e := oom("app", i)
		e.Diagnosis = &supervise.Diagnosis{MemoryStat: map[string]uint64{"anon": 500 << 20}, Top: []cgroup.Proc{{Pid: 42, Command: "node", RSS: 490 << 20}}}
		n.Observe(e)
	}
	n.Observe(supervise.Event{Kind: supervise.Started, Run: "app"})
	rec.wait(t, 3) // first, summary at the window's close, resolved after a quiet one
	r := n.Close(time.Second)
	ns := rec.notifications(t)
	if len(ns) != 3 || r.Delivered != 3 || r.Undelivered != 0 {
		t.Fatalf("got %d notifications, report %+v", len(ns), r)
	}
	if ns[0].Count+ns[1].Count != k || ns[0].Count != 1 || ns[2].Status != Resolved {
		t.Fatalf("counts %d+%d, third %s", ns[0].Count, ns[1].Count, ns[2].Status)
	}
	first := ns[0]
	if first.Schema != Schema || first.Host != "vps1" || first.Run != "app" || first.Kind != "oom_kill" || first.Severity != Critical ||
		first.Ceiling != 512<<20 || strings.Join(first.Command, " ") != "node app.js" || first.Diagnosis == nil || first.Diagnosis.Top[0].Pid != 42 ||
		first.FirstSeen.IsZero() {
		t.Fatalf("payload %+v", first)
	}
}

func TestFailingSlowAndDownSinksNeverHoldUpAndAreCounted(t *testing.T) {
	failing := newReceiver(t, 500)
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	t.Cleanup(func() { close(hang); slow.Close() })
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + l.Addr().String() + "/hook"
	l.Close()
	ok := newReceiver(t, 204)

	n := New(fast(sink(t, failing.URL, ""), sink(t, slow.URL, ""), sink(t, down, ""), sink(t, ok.URL, "")))
	start := time.Now()
	for i := range 1000 { // Observe never waits, whatever the sinks do
		n.Observe(oom("app", i))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Observe blocked for %v", d)
	}
	ok.wait(t, 1)
	failing.wait(t, 3) // one try and two retries
	r := n.Close(500 * time.Millisecond)
	// Four sinks; the first and the flushed summary each: 8 in all.
	if r.Delivered != 2 || r.Undelivered != 6 {
		t.Fatalf("report %+v: want 2 delivered (the healthy sink), 6 not", r)
	}
}

func TestQueueIsBounded(t *testing.T) {
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	t.Cleanup(func() { close(hang); slow.Close() })
	cfg := fast(sink(t, slow.URL, ""))
	cfg.Queue, cfg.Timeout = 4, 5*time.Second
	n := New(cfg)
	for i := range 50 { // distinct runs: 50 first notifications
		n.Observe(oom("app"+string(rune('a'+i%26))+string(rune('a'+i/26)), 0))
	}
	time.Sleep(100 * time.Millisecond)
	r := n.Close(100 * time.Millisecond)
	if r.Dropped < 40 || r.Delivered != 0 || r.Dropped+r.Undelivered != 50 {
		t.Fatalf("report %+v: want the queue held at 4 and the rest counted as dropped", r)
	}
}

func TestSlackFormat(t *testing.T) {
	rec := newReceiver(t, 200)
	n := New(fast(sink(t, rec.URL+"/services/T000/B000/XXXX", "slack")))
	e := oom("app", 3)
	e.Diagnosis = &supervise.Diagnosis{Top: []cgroup.Proc{{Pid: 42, Command: "node", RSS: 490 << 20}}, OOMReport: "Memory cgroup out of memory: Killed process 42 (node)"}
	n.Observe(e)
	rec.wait(t, 1)
	n.Close(time.Second)
	var body map[string]string
	json.Unmarshal(rec.bodies[0], &body)
	want := ":rotating_light: *app* on vps1: app was killed by the kernel OOM killer at its 512 MiB ceiling (peak 512 MiB)\nrestarts 3 · ceiling 512 MiB · peak 512 MiB\n• 42 node 490 MiB\n```Memory cgroup out of memory: Killed process 42 (node)```"
	if body["text"] != want {
		t.Fatalf("slack text:\n%s\nwant:\n%s", body["text"], want)
	}
}

func TestExecSinkGetsTheJSONOnStdin(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "got.json")
	script := filepath.Join(dir, "hook.sh")
	os.WriteFile(script, []byte("#!/bin/sh\ncat > "+out+"\necho \"$GUARDRUN_NOTIFY_KIND $GUARDRUN_NOTIFY_STATUS\" > "+out+".env\n"), 0o755)
	n := New(fast(NewExecSink(script + " --token s3cret")))
	n.Observe(oom("app", 0))
	if r := n.Close(5 * time.Second); r.Delivered != 1 {
		t.Fatalf("report %+v", r)
	}
	b, _ := os.ReadFile(out)
	var got Notification
	if err := json.Unmarshal(b, &got); err != nil || got.Kind != "oom_kill" {
		t.Fatalf("stdin was %q: %v", b, err)
	}
	if env, _ := os.ReadFile(out + ".env"); string(env) != "oom_kill firing\n" {
		t.Fatalf("env %q", env)
	}
	if name := NewExecSink(script + " --token s3cret").Name(); strings.Contains(name, "s3cret") {
		t.Fatalf("sink name %q shows the token", name)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T000/B000/XXXX": "https://hooks.slack.com/…",
		"https://user:pw@example.com/hook?token=abc":      "https://example.com/…",
		"http://127.0.0.1:9093":                           "http://127.0.0.1:9093",
		"alertmanager+http://am.local:9093/":              "alertmanager+http://am.local:9093",
		"::bad":                                           "(unparsable URL)",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"ftp://x", "hooks.slack.com/x", "alertmanager+ftp://x"} {
		if _, err := ParseSink(bad, "", time.Minute); err == nil {
			t.Errorf("ParseSink(%q) accepted", bad)
		}
	}
	if _, err := ParseSink("http://x", "xml", time.Minute); err == nil {
		t.Error("an unknown format was accepted")
	}
}

func TestRedactArgs(t *testing.T) {
	in := []string{"node", "app.js", "--token", "s3cr3t", "--api-key=abc", "--port", "8080",
		"https://user:pw@hooks.example/x/y?k=1", "--password=pw", "plain", "--auth-file", "/etc/x"}
	want := []string{"node", "app.js", "--token", "…", "--api-key=…", "--port", "8080",
		"https://hooks.example/…", "--password=…", "plain", "--auth-file", "…"}
	got := RedactArgs(in)
	if !slices.Equal(got, want) {
		t.Errorf("RedactArgs:\n got %q\nwant %q", got, want)
	}
	if in[3] != "s3cr3t" {
		t.Error("RedactArgs changed its input")
	}
}

// The figures beside the sentence carry the working set and the page
// cache as well as usage, in every body; the runtime's report shows where
// the heap ran out.
func TestBodiesCarryTheWorkingSet(t *testing.T) {
	d := newDedup()
	d.Host = "vps1"
	pressure := supervise.Event{Kind: supervise.PressureStall, Run: "api", Trigger: "some 100000 1000000", Usage: 500 << 20, WorkingSet: 180 << 20, Cache: 320 << 20, Ceiling: 512 << 20, Restarts: 2}
	worker := supervise.Event{Kind: supervise.OOMKill, Run: "api", Pid: 4242, Victim: &cgroup.Proc{Pid: 4243, Command: "node", RSS: 120 << 20},
		Usage: 128 << 20, WorkingSet: 127 << 20, Cache: 1 << 20, Ceiling: 128 << 20, Peak: 128 << 20, Killer: "the kernel OOM killer"}
	for _, tc := range []struct {
		name        string
		e           supervise.Event
		slack, desc string
		json        []string
	}{
		{"pressure", pressure,
			":warning: *api* on vps1: api is stalled on memory (PSI trigger \"some 100000 1000000\"): working set 180 MiB, usage 500 MiB, page cache 320 MiB, ceiling 512 MiB\n" +
				"restarts 2 · working set 180 MiB · usage 500 MiB · page cache 320 MiB · ceiling 512 MiB",
			"working set 180 MiB; usage 500 MiB; page cache 320 MiB; ceiling 512 MiB",
			[]string{`"usage":524288000`, `"working_set":188743680`, `"cache":335544320`, `"ceiling":536870912`}},
		{"oom_kill of a worker", worker,
			":rotating_light: *api* on vps1: api: the kernel OOM killer killed worker pid 4243 (node) at the 128 MiB ceiling; the service runs on\n" +
				"restarts 0 · working set 127 MiB · usage 128 MiB · page cache 1 MiB · ceiling 128 MiB · peak 128 MiB",
			"working set 127 MiB; usage 128 MiB; page cache 1 MiB; ceiling 128 MiB; peak 128 MiB",
			[]string{`"victim":{"pid":4243,"command":"node","rss":125829120}`, `"severity":"critical"`}},
		{"heap_oom", heapOOM("api", 1),
			":rotating_light: *api* on vps1: api ran out of its 192 MiB JavaScript heap (node, pid 4242) at processRequest (/srv/app.js:12:5)\n" +
				"restarts 1 · working set 280 MiB · usage 300 MiB · ceiling 512 MiB\n" +
				"JavaScript heap 190 MiB used of 192 MiB (node, pid 4242): Allocation failed - JavaScript heap out of memory\n" +
				"```at processRequest (/srv/app.js:12:5)\nat Server.<anonymous> (/srv/app.js:30:3)```",
			"working set 280 MiB; usage 300 MiB; ceiling 512 MiB; JavaScript heap 190 MiB used of 192 MiB (node, pid 4242); at processRequest (/srv/app.js:12:5)",
			[]string{`"kind":"heap_oom"`, `"runtime":{"runtime":"node","pid":4242,"event":"Allocation failed - JavaScript heap out of memory"`, `"heap_limit":201326592`}},
	} {
		ns := d.Observe(tc.e, at(0))
		if len(ns) != 1 {
			t.Fatalf("%s: %d notifications", tc.name, len(ns))
		}
		n := ns[0]
		b, err := slackBody(n)
		if err != nil {
			t.Fatal(err)
		}
		var slack map[string]string
		json.Unmarshal(b, &slack)
		if slack["text"] != tc.slack {
			t.Errorf("%s: slack text:\n%s\nwant:\n%s", tc.name, slack["text"], tc.slack)
		}
		if got := describe(n); got != tc.desc {
			t.Errorf("%s: alertmanager description:\n %q\nwant %q", tc.name, got, tc.desc)
		}
		b, err = jsonBody(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range tc.json {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s: JSON lacks %s:\n%s", tc.name, want, b)
			}
		}
		if !strings.Contains(string(b), `"schema":"`+Schema+`"`) || Schema != "guardrun.notification/v1" {
			t.Errorf("%s: schema changed: %s", tc.name, b)
		}
	}
}
