package notify

import (
	"strings"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
)

var t0 = time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

// oom is the main child's OOM kill, as the kernel's line names it.
func oom(run string, restarts int) supervise.Event {
	return supervise.Event{Kind: supervise.OOMKill, Run: run, Pid: 42, Victim: &cgroup.Proc{Pid: 42, Command: "node"}, Ceiling: 512 << 20, Peak: 512 << 20, Restarts: restarts, Killer: "the kernel OOM killer"}
}

func oomStarted(run string) supervise.Event {
	return supervise.Event{Kind: supervise.Started, Run: run}
}

func newDedup() *Dedup { return &Dedup{Window: 10 * time.Minute, Host: "vps1"} }

func TestFirstIsSentAtOnceRepeatsAreFoldedIntoOneSummary(t *testing.T) {
	d := newDedup()
	var got []Notification
	got = append(got, d.Observe(supervise.Event{Kind: supervise.Started, Run: "app"}, at(0))...)
	const k = 13
	for i := range k {
		got = append(got, d.Observe(oom("app", i), at(10+i*30))...)
		got = append(got, d.Observe(supervise.Event{Kind: supervise.Started, Run: "app"}, at(11+i*30))...)
	}
	if len(got) != 1 || got[0].Count != 1 || got[0].Kind != "oom_kill" || got[0].Status != Firing {
		t.Fatalf("inside the window: %+v, want only the first", got)
	}
	if got[0].Message != "app was killed by the kernel OOM killer at its 512 MiB ceiling (peak 512 MiB)" || got[0].Severity != Critical || got[0].Host != "vps1" {
		t.Fatalf("first: %+v", got[0])
	}
	// The window closes 10 min after the first: one summary of the rest.
	sum := d.Tick(at(10 + 600))
	if len(sum) != 1 || sum[0].Count != k-1 {
		t.Fatalf("at the window's close: %+v, want one summary of %d", sum, k-1)
	}
	if want := "12 more OOM kills of app in the last 10 min, restarts 12, last at 14:06:10 UTC"; sum[0].Message != want {
		t.Fatalf("summary %q, want %q", sum[0].Message, want)
	}
	if sum[0].FirstSeen != at(40) || sum[0].LastSeen != at(370) {
		t.Fatalf("summary spans %v..%v", sum[0].FirstSeen, sum[0].LastSeen)
	}
	if got[0].Count+sum[0].Count != k {
		t.Fatal("counts do not sum to the events")
	}
	// A quiet window with the child up resolves the incident.
	res := d.Tick(at(10 + 1200))
	if len(res) != 1 || res[0].Status != Resolved || res[0].Count != 0 || res[0].Severity != Info {
		t.Fatalf("after a quiet window: %+v, want resolved", res)
	}
	if len(d.Tick(at(10+3600))) != 0 {
		t.Fatal("a resolved incident sent more")
	}
	// The next OOM kill opens a new incident and is sent at once.
	if n := d.Observe(oom("app", 20), at(4000)); len(n) != 1 || n[0].Count != 1 {
		t.Fatalf("a new incident: %+v", n)
	}
}

func TestNotResolvedWhileTheChildIsDown(t *testing.T) {
	d := newDedup()
	d.Observe(supervise.Event{Kind: supervise.Started, Run: "app"}, at(0))
	d.Observe(oom("app", 0), at(1))
	d.Observe(supervise.Event{Kind: supervise.Exited, Run: "app", Cause: "oom_kill", ExitCode: 137}, at(1))
	if n := d.Tick(at(2000)); len(n) != 0 {
		t.Fatalf("resolved with the child down: %+v", n)
	}
	d.Observe(supervise.Event{Kind: supervise.Started, Run: "app"}, at(2001))
	if n := d.Tick(at(2001 + 600)); len(n) != 1 || n[0].Status != Resolved {
		t.Fatalf("once up for a quiet window: %+v", n)
	}
}

func TestKindsAreNeverFoldedTogether(t *testing.T) {
	d := newDedup()
	d.Observe(supervise.Event{Kind: supervise.Started, Run: "app"}, at(0))
	restart := supervise.Event{Kind: supervise.MemoryRestart, Run: "app", Reason: "restart_at", Detail: "its working set stayed over 460 MiB for 3s"}
	a := d.Observe(oom("app", 0), at(1))
	b := d.Observe(restart, at(2))
	c := d.Observe(oom("other", 0), at(3))
	h := d.Observe(heapOOM("app", 0), at(4))
	if len(a) != 1 || len(b) != 1 || len(c) != 1 || len(h) != 1 || b[0].Kind != "memory_restart" || b[0].Severity != Warning || c[0].Run != "other" || h[0].Kind != "heap_oom" {
		t.Fatalf("distinct keys must each be sent: %v %v %v %v", a, b, c, h)
	}
	// A repeat of each folds into its own kind, never into the other.
	d.Observe(oom("app", 1), at(5))
	d.Observe(heapOOM("app", 1), at(6))
	d.Observe(heapOOM("app", 2), at(7))
	got := map[string]int{}
	for _, n := range d.Flush() {
		got[n.Kind] = n.Count
	}
	if len(got) != 2 || got["oom_kill"] != 1 || got["heap_oom"] != 2 {
		t.Fatalf("folded counts by kind %v; want oom_kill 1, heap_oom 2", got)
	}
}

func TestGaveUpAndPreflightFailedAreAlwaysSent(t *testing.T) {
	d := newDedup()
	for i := range 3 {
		for _, e := range []supervise.Event{
			{Kind: supervise.GaveUp, Run: "app", ExitCode: 1, Reason: "5 restarts in 3s"},
			{Kind: supervise.PreflightFailed, Run: "app", Available: 1 << 30, Need: 2 << 30},
		} {
			if n := d.Observe(e, at(i)); len(n) != 1 || n[0].Severity != Critical {
				t.Fatalf("%s #%d: %+v", e.Kind, i, n)
			}
		}
	}
}

func TestFlushSendsWhatIsFolded(t *testing.T) {
	d := newDedup()
	d.Observe(oom("app", 0), at(0))
	d.Observe(oom("app", 1), at(5))
	d.Observe(oom("app", 2), at(6))
	n := d.Flush()
	if len(n) != 1 || n[0].Count != 2 || !strings.HasPrefix(n[0].Message, "2 more OOM kills of app") {
		t.Fatalf("flush: %+v", n)
	}
	if len(d.Flush()) != 0 {
		t.Fatal("a second flush sent again")
	}
}

func TestOnlyIncidentsAreNotified(t *testing.T) {
	sigterm := supervise.Event{Kind: supervise.Exited, Run: "a", Cause: supervise.CauseSignaled, Signal: "SIGTERM", ExitCode: 143}
	asked := func(e supervise.Event) supervise.Event { e.Asked = true; return e }
	for _, tc := range []struct {
		name string
		e    supervise.Event
		sent bool
	}{
		{"started", supervise.Event{Kind: supervise.Started, Run: "a"}, false},
		{"restarting", supervise.Event{Kind: supervise.Restarting, Run: "a"}, false},
		{"stopping", supervise.Event{Kind: supervise.Stopping, Run: "a"}, false},
		{"stopped", supervise.Event{Kind: supervise.Stopped, Run: "a"}, false},
		{"preflight_wait", supervise.Event{Kind: supervise.PreflightWait, Run: "a"}, false},
		{"a sample", supervise.Event{Kind: supervise.Sampled, Run: "a", Usage: 1 << 20}, false},
		{"exit 0", supervise.Event{Kind: supervise.Exited, Run: "a", ExitCode: 0}, false},
		// The death has its own event, which is the incident.
		{"exited of an OOM kill", supervise.Event{Kind: supervise.Exited, Run: "a", ExitCode: 137, Cause: supervise.CauseOOMKill}, false},
		{"exited of a heap OOM", supervise.Event{Kind: supervise.Exited, Run: "a", ExitCode: 134, Cause: supervise.CauseHeapOOM, Signal: "SIGABRT"}, false},
		// guardrun stopped it to restart it: the memory_restart says so.
		{"exited at restart_at", supervise.Event{Kind: supervise.Exited, Run: "a", ExitCode: 0, Reason: "restart_at"}, false},
		{"killed at restart_at", supervise.Event{Kind: supervise.Exited, Run: "a", ExitCode: 137, Signal: "SIGKILL", Reason: "restart_at"}, false},
		// A stop that was asked for: TERM to guardrun (systemctl stop,
		// docker stop), however the child took it.
		{"asked: killed by SIGTERM", asked(sigterm), false},
		{"asked: exit 1 on SIGTERM", asked(supervise.Event{Kind: supervise.Exited, Run: "a", Cause: supervise.CauseExited, ExitCode: 1}), false},
		{"asked: SIGKILL after the stop timeout", asked(supervise.Event{Kind: supervise.Exited, Run: "a", Cause: supervise.CauseSignaled, Signal: "SIGKILL", ExitCode: 137}), false},
		// A crossing that passes is a spike guardrun does not act on.
		{"threshold_crossed", supervise.Event{Kind: supervise.ThresholdCrossed, Run: "a", Usage: 460 << 20, Threshold: 460 << 20}, false},

		{"SIGTERM from elsewhere", sigterm, true},
		{"exit 1", supervise.Event{Kind: supervise.Exited, Run: "a", ExitCode: 1}, true},
		{"oom_kill", oom("a", 0), true},
		{"heap_oom", heapOOM("a", 0), true},
		{"memory_restart", supervise.Event{Kind: supervise.MemoryRestart, Run: "a", Reason: "pressure"}, true},
		{"pressure", supervise.Event{Kind: supervise.PressureStall, Run: "a", Trigger: "some 100000 1000000"}, true},
		{"leak_suspected", supervise.Event{Kind: supervise.LeakSuspected, Run: "a", Detail: "grows 1 MiB/min"}, true},
		{"gave_up", supervise.Event{Kind: supervise.GaveUp, Run: "a", ExitCode: 1}, true},
		{"preflight_failed", supervise.Event{Kind: supervise.PreflightFailed, Run: "a"}, true},
	} {
		d := newDedup()
		d.Observe(supervise.Event{Kind: supervise.Started, Run: "a"}, at(0))
		n := d.Observe(tc.e, at(1))
		if sent := len(n) == 1; sent != tc.sent || len(n) > 1 {
			t.Errorf("%s: %d notifications %+v; want sent=%v", tc.name, len(n), n, tc.sent)
		}
	}
	d := newDedup()
	if n := d.Observe(supervise.Event{Kind: supervise.Exited, Run: "a", ExitCode: 1}, at(1)); len(n) != 1 || n[0].Message != "a exited 1" || *n[0].ExitCode != 1 {
		t.Fatalf("a failed exit: %+v", n)
	}
}

// A stop that was asked for is not an incident whatever the policy: under
// --restart always the child comes back by itself after a SIGTERM
// that was not asked for, and after one that was, guardrun ends.
func TestAskedStopIsNeverAnIncident(t *testing.T) {
	d := newDedup()
	steps := []supervise.Event{
		{Kind: supervise.Started, Run: "api", Pid: 10},
		{Kind: supervise.Stopping, Run: "api", Pid: 10},
		{Kind: supervise.Exited, Run: "api", Pid: 10, Cause: supervise.CauseSignaled, Signal: "SIGTERM", ExitCode: 143, Asked: true},
		{Kind: supervise.Stopped, Run: "api", Signal: "SIGTERM", ExitCode: 143},
	}
	for i, e := range steps {
		if n := d.Observe(e, at(i)); len(n) != 0 {
			t.Fatalf("%s: notified %+v", e.Kind, n)
		}
	}
	if n := append(d.Tick(at(4000)), d.Flush()...); len(n) != 0 {
		t.Fatalf("later: %+v", n)
	}
}

// A restart or a stop a person asked for (guardrun restart, stop, signal
// NAME) or the --restart-every schedule made is not an incident: neither
// the request's event nor the exit of the child it stopped (issue 15).
func TestAskedAndScheduledRestartsAreNeverIncidents(t *testing.T) {
	d := newDedup()
	by := &supervise.Peer{Uid: 1000, Pid: 4242, Command: "guardrun"}
	var steps []supervise.Event
	for _, reason := range []string{supervise.ReasonAsked, supervise.ReasonScheduled} {
		kind := supervise.RestartAsked
		if reason == supervise.ReasonScheduled {
			kind = supervise.RestartScheduled
		}
		steps = append(steps,
			supervise.Event{Kind: supervise.Started, Run: "api", Pid: 10},
			supervise.Event{Kind: kind, Run: "api", Pid: 10, By: by},
			supervise.Event{Kind: supervise.Exited, Run: "api", Pid: 10, Cause: supervise.CauseSignaled, Signal: "SIGTERM", ExitCode: 143, Reason: reason},
			supervise.Event{Kind: supervise.Restarting, Run: "api", Cause: supervise.CauseSignaled, ExitCode: 143, Reason: reason, By: by})
	}
	steps = append(steps,
		supervise.Event{Kind: supervise.Started, Run: "api", Pid: 11},
		supervise.Event{Kind: supervise.SignalAsked, Run: "api", Pid: 11, Signal: "SIGUSR1", By: by},
		supervise.Event{Kind: supervise.StopAsked, Run: "api", Pid: 11, By: by},
		supervise.Event{Kind: supervise.Stopping, Run: "api", Pid: 11},
		supervise.Event{Kind: supervise.Exited, Run: "api", Pid: 11, Cause: supervise.CauseSignaled, Signal: "SIGTERM", ExitCode: 143, Asked: true},
		supervise.Event{Kind: supervise.Stopped, Run: "api", ExitCode: 143})
	for i, e := range steps {
		if n := d.Observe(e, at(i)); len(n) != 0 {
			t.Fatalf("%s: notified %+v", e.Kind, n)
		}
	}
	if n := append(d.Tick(at(4000)), d.Flush()...); len(n) != 0 {
		t.Fatalf("later: %+v", n)
	}
	// The same exit with no reason is a crash, and is one.
	if n := d.Observe(supervise.Event{Kind: supervise.Exited, Run: "api", Pid: 12, Cause: supervise.CauseSignaled, Signal: "SIGTERM", ExitCode: 143}, at(5000)); len(n) != 1 {
		t.Fatalf("a crash: %+v, want one notification", n)
	}
}

func heapOOM(run string, restarts int) supervise.Event {
	return supervise.Event{Kind: supervise.HeapOOM, Run: run, Pid: 4242, Restarts: restarts, Usage: 300 << 20, WorkingSet: 280 << 20, Ceiling: 512 << 20,
		Diagnosis: &supervise.Diagnosis{Runtime: &supervise.RuntimeReport{
			Runtime: "node", Pid: 4242, Event: "Allocation failed - JavaScript heap out of memory",
			Stack:     []string{"at processRequest (/srv/app.js:12:5)", "at Server.<anonymous> (/srv/app.js:30:3)"},
			HeapLimit: 192 << 20, HeapUsed: 190 << 20,
		}}}
}

// heap_oom is deduplicated exactly as oom_kill: critical, the first at
// once, repeats in one summary, resolved after a quiet window.
func TestHeapOOMIsDeduplicatedLikeAnOOMKill(t *testing.T) {
	d := newDedup()
	d.Observe(supervise.Event{Kind: supervise.Started, Run: "api"}, at(0))
	first := d.Observe(heapOOM("api", 0), at(10))
	if len(first) != 1 || first[0].Severity != Critical || first[0].Kind != "heap_oom" || first[0].Count != 1 {
		t.Fatalf("first: %+v", first)
	}
	if want := "api ran out of its 192 MiB JavaScript heap (node, pid 4242) at processRequest (/srv/app.js:12:5)"; first[0].Message != want {
		t.Fatalf("message %q, want %q", first[0].Message, want)
	}
	if first[0].Diagnosis == nil || first[0].Diagnosis.Runtime == nil || first[0].WorkingSet != 280<<20 {
		t.Fatalf("the runtime's report and the figures go along: %+v", first[0])
	}
	for i := 1; i <= 3; i++ {
		// The death's exit is no second incident.
		d.Observe(supervise.Event{Kind: supervise.Exited, Run: "api", Cause: supervise.CauseHeapOOM, ExitCode: 134, Signal: "SIGABRT"}, at(10+i*60))
		if n := d.Observe(heapOOM("api", i), at(11+i*60)); len(n) != 0 {
			t.Fatalf("repeat %d sent: %+v", i, n)
		}
		d.Observe(supervise.Event{Kind: supervise.Started, Run: "api"}, at(12+i*60))
	}
	sum := d.Tick(at(10 + 600))
	if len(sum) != 1 || sum[0].Count != 3 || sum[0].Severity != Critical {
		t.Fatalf("summary: %+v", sum)
	}
	if want := "3 more heap OOMs of api in the last 10 min, restarts 3, last at 14:03:11 UTC"; sum[0].Message != want {
		t.Fatalf("summary %q, want %q", sum[0].Message, want)
	}
	res := d.Tick(at(10 + 1200))
	if len(res) != 1 || res[0].Status != Resolved || res[0].Message != "resolved: no heap OOMs of api for 10 min and it is running" {
		t.Fatalf("resolved: %+v", res)
	}
}

func TestMessages(t *testing.T) {
	main := &cgroup.Proc{Pid: 4242, Command: "node"}
	worker := &cgroup.Proc{Pid: 4243, Command: "node"}
	rt := func(r supervise.RuntimeReport) *supervise.Diagnosis { return &supervise.Diagnosis{Runtime: &r} }
	for _, tc := range []struct {
		name string
		e    supervise.Event
		want string
	}{
		{"oom_kill of a worker", supervise.Event{Kind: supervise.OOMKill, Run: "api", Pid: 4242, Victim: worker, Ceiling: 128 << 20, Peak: 128 << 20, Killer: "the kernel OOM killer"},
			"api: the kernel OOM killer killed worker pid 4243 (node) at the 128 MiB ceiling; the service runs on"},
		{"oom_kill of the main child", supervise.Event{Kind: supervise.OOMKill, Run: "api", Pid: 4242, Victim: main, Ceiling: 128 << 20, Peak: 128 << 20, Killer: "the kernel OOM killer"},
			"api was killed by the kernel OOM killer at its 128 MiB ceiling (peak 128 MiB)"},
		{"oom_kill, no kernel line", supervise.Event{Kind: supervise.OOMKill, Run: "api", Pid: 4242, Ceiling: 128 << 20, Peak: 128 << 20, Killer: "the kernel OOM killer"},
			"api: the kernel OOM killer killed a process in its group at its 128 MiB ceiling (peak 128 MiB); the kernel's log did not name it"},
		{"oom_kill of a worker without a command", supervise.Event{Kind: supervise.OOMKill, Run: "api", Pid: 1, Victim: &cgroup.Proc{Pid: 7}, Ceiling: 64 << 20},
			"api: the kernel OOM killer killed worker pid 7 at the 64 MiB ceiling; the service runs on"},
		{"heap_oom", heapOOM("api", 0), "api ran out of its 192 MiB JavaScript heap (node, pid 4242) at processRequest (/srv/app.js:12:5)"},
		{"heap_oom of a worker", supervise.Event{Kind: supervise.HeapOOM, Run: "api", Pid: 4242, Diagnosis: rt(supervise.RuntimeReport{Runtime: "node", Pid: 4250, HeapLimit: 96 << 20, Stack: []string{"    at JSON.parse (<anonymous>)"}})},
			"api ran out of its 96 MiB JavaScript heap (node, pid 4250) at JSON.parse (<anonymous>); the service runs on"},
		{"heap_oom without a stack or limit", supervise.Event{Kind: supervise.HeapOOM, Run: "api", Pid: 4242, Diagnosis: rt(supervise.RuntimeReport{Runtime: "node"})},
			"api ran out of its JavaScript heap (node, pid 4242)"},
		{"heap_oom of a JVM", supervise.Event{Kind: supervise.HeapOOM, Run: "svc", Pid: 9, Diagnosis: rt(supervise.RuntimeReport{Runtime: "jvm", Pid: 9, HeapLimit: 1 << 30})},
			"svc ran out of its 1 GiB Java heap (jvm, pid 9)"},
		{"heap_oom without the runtime's report", supervise.Event{Kind: supervise.HeapOOM, Run: "api", Pid: 4242},
			"api ran out of its runtime's heap (pid 4242)"},
		{"memory_restart", supervise.Event{Kind: supervise.MemoryRestart, Run: "api", Reason: "restart_at", Detail: "its working set stayed over --restart-at 460 MiB for 3s"},
			"guardrun restarted api before its ceiling: its working set stayed over --restart-at 460 MiB for 3s"},
		{"memory_restart without a detail", supervise.Event{Kind: supervise.MemoryRestart, Run: "api", Reason: "pressure"},
			"guardrun restarted api before its ceiling: the --pressure trigger fired"},
		{"pressure", supervise.Event{Kind: supervise.PressureStall, Run: "api", Trigger: "some 100000 1000000", Usage: 500 << 20, WorkingSet: 180 << 20, Cache: 320 << 20, Ceiling: 512 << 20},
			`api is stalled on memory (PSI trigger "some 100000 1000000"): working set 180 MiB, usage 500 MiB, page cache 320 MiB, ceiling 512 MiB`},
		{"pressure without a cgroup", supervise.Event{Kind: supervise.PressureStall, Run: "api", Trigger: "x", Usage: 100 << 20, WorkingSet: 100 << 20},
			`api is stalled on memory (PSI trigger "x"): usage 100 MiB`},
		{"leak_suspected reads the working set", supervise.Event{Kind: supervise.LeakSuspected, Run: "api", Detail: "grows 6 MiB/min", Usage: 400 << 20, WorkingSet: 90 << 20},
			"api looks like it leaks memory: grows 6 MiB/min (now 90 MiB)"},
		{"exited by a signal", supervise.Event{Kind: supervise.Exited, Run: "api", Signal: "SIGSEGV", ExitCode: 139}, "api was killed by signal 11 (SIGSEGV)"},
	} {
		if got := tc.e.Sentence(); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestPluralWords(t *testing.T) {
	for _, tc := range []struct {
		k          supervise.Kind
		one, other string
	}{
		{supervise.OOMKill, "OOM kill", "OOM kills"},
		{supervise.HeapOOM, "heap OOM", "heap OOMs"},
		{supervise.MemoryRestart, "memory restart", "memory restarts"},
		{supervise.PressureStall, "pressure stall", "pressure stalls"},
		{supervise.LeakSuspected, "suspected leak", "suspected leaks"},
		{supervise.Exited, "failed exit", "failed exits"},
	} {
		if a, b := plural(tc.k, 1), plural(tc.k, 3); a != tc.one || b != tc.other {
			t.Errorf("%s: %q, %q; want %q, %q", tc.k, a, b, tc.one, tc.other)
		}
	}
}

func TestNextIsTheEarliestWindowClose(t *testing.T) {
	d := newDedup()
	if !d.Next().IsZero() {
		t.Fatal("no incident, yet a deadline")
	}
	d.Observe(oom("b", 0), at(100))
	d.Observe(oom("a", 0), at(50))
	if d.Next() != at(650) {
		t.Fatalf("next %v, want %v", d.Next(), at(650))
	}
}
