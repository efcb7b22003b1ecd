package notify

import (
	"strings"
	"testing"
	"time"

	"github.com/guardrun/guardrun/supervise"
)

var t0 = time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func oom(run string, restarts int) supervise.Event {
	return supervise.Event{Kind: supervise.OOMKill, Run: run, Limit: 512 << 20, Peak: 512 << 20, Restarts: restarts, Reason: "the kernel OOM killer"}
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
	cross := supervise.Event{Kind: supervise.ThresholdCrossed, Run: "app", Usage: 460 << 20, Limit: 512 << 20, Threshold: 460 << 20}
	a := d.Observe(oom("app", 0), at(1))
	b := d.Observe(cross, at(2))
	c := d.Observe(oom("other", 0), at(3))
	if len(a) != 1 || len(b) != 1 || len(c) != 1 || b[0].Kind != "threshold_crossed" || b[0].Severity != Warning || c[0].Run != "other" {
		t.Fatalf("distinct keys must each be sent: %v %v %v", a, b, c)
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
	d := newDedup()
	for _, e := range []supervise.Event{
		{Kind: supervise.Started, Run: "a"},
		{Kind: supervise.Restarting, Run: "a"},
		{Kind: supervise.Stopped, Run: "a"},
		{Kind: supervise.PreflightWait, Run: "a"},
		{Kind: supervise.Exited, Run: "a", ExitCode: 0},
		{Kind: supervise.Exited, Run: "a", ExitCode: 137, Cause: "oom_kill"}, // oom_kill says it
		{Kind: supervise.Exited, Run: "a", ExitCode: 0, Reason: "restart_at"},
	} {
		if n := d.Observe(e, at(0)); len(n) != 0 {
			t.Errorf("%+v was notified: %+v", e, n)
		}
	}
	if n := d.Observe(supervise.Event{Kind: supervise.Exited, Run: "a", ExitCode: 1}, at(1)); len(n) != 1 || n[0].Message != "a exited 1" || *n[0].ExitCode != 1 {
		t.Fatalf("a failed exit: %+v", n)
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
