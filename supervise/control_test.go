package supervise

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/testchild"
)

// events collects a run's events, safe to read from the test.
type events struct {
	mu sync.Mutex
	es []Event
}

func (l *events) Observe(e Event) { l.mu.Lock(); l.es = append(l.es, e); l.mu.Unlock() }

func (l *events) of(k Kind) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.es {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// ask sends a request and returns the run's last answer.
func ask(t *testing.T, ctl chan<- Request, a Action, sig syscall.Signal) Reply {
	t.Helper()
	req := Request{Action: a, Signal: sig, By: Peer{Uid: 1000, Pid: 4242, Command: "guardrun"}, Reply: make(chan Reply, 2)}
	select {
	case ctl <- req:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the run did not take the request", a)
	}
	for {
		select {
		case r := <-req.Reply:
			if r.Done {
				return r
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: no last answer", a)
		}
	}
}

// An asked restart stops the child by its stop signal and starts another
// at once: no backoff, the counters kept, and never a crash loop, even
// past --max-restarts 1; a signal reaches the child; a stop ends the run
// as a TERM does.
func TestAskedRestartKeepsTheRunAndIsNoFailure(t *testing.T) {
	dir := t.TempDir()
	sig := filepath.Join(dir, "sig")
	cfg := config(t, 64<<20, "signals", sig)
	ctl := make(chan Request)
	cfg.Control = ctl
	cfg.Restart, cfg.MaxRestarts, cfg.RestartWindow = RestartOnFailure, 1, time.Minute
	cfg.Backoff = Backoff{Min: time.Hour, Max: time.Hour} // a backoff would show
	var ev events
	done := make(chan *Result, 1)
	go func() { done <- run(t, context.Background(), cfg, &ev) }()

	testchild.WaitFile(t, sig+".ready")
	var pid int
	for i := range 3 {
		os.Remove(sig + ".ready")
		r := ask(t, ctl, ActionRestart, 0)
		if r.Err != nil || r.Pid == 0 || r.NewPid == 0 || r.Pid == r.NewPid {
			t.Fatalf("restart %d: %+v", i, r)
		}
		if want := "restarted " + cfg.Name; !strings.HasPrefix(r.Sentence(), want) {
			t.Errorf("reply %q, want %s (pid A -> B)", r.Sentence(), want)
		}
		pid = r.NewPid
		testchild.WaitFile(t, sig+".ready")
	}
	if r := ask(t, ctl, ActionSignal, syscall.SIGUSR1); r.Err != nil || r.Pid != pid {
		t.Fatalf("signal: %+v, want pid %d", r, pid)
	}
	for i := 0; !strings.Contains(readFile(sig), "user defined signal 1"); i++ {
		if i > 500 {
			t.Fatalf("the child did not get USR1: %q", readFile(sig))
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop := ask(t, ctl, ActionStop, 0)
	r := <-done
	if stop.Err != nil || stop.ExitCode != r.ExitCode || !r.Stopped || !r.Asked {
		t.Fatalf("stop: %+v; result %+v", stop, r)
	}
	if r.GaveUp != "" || r.Restarts != 3 {
		t.Fatalf("gave up %q, restarts %d; want none, 3", r.GaveUp, r.Restarts)
	}
	asked := ev.of(RestartAsked)
	if len(asked) != 3 || asked[0].By == nil || asked[0].By.String() != "uid 1000 pid 4242 (guardrun)" {
		t.Fatalf("restart_asked events: %+v", asked)
	}
	for _, e := range ev.of(Restarting) {
		if e.Delay != 0 || e.Reason != ReasonAsked || e.By == nil {
			t.Errorf("restarting %+v: want no delay, reason asked, by", e)
		}
	}
	for _, e := range ev.of(Exited)[:3] {
		if e.Reason != ReasonAsked || e.Asked {
			t.Errorf("exited %+v: want reason asked, not a stop", e)
		}
	}
	if n := len(ev.of(SignalAsked)); n != 1 {
		t.Errorf("%d signal_asked events, want 1", n)
	}
	if n := len(ev.of(StopAsked)); n != 1 {
		t.Errorf("%d stop_asked events, want 1", n)
	}
}

// A restart asked during a backoff cuts it short; a signal with no child
// says so.
func TestAskedRestartCutsTheBackoffShort(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	cfg := config(t, 64<<20, "touch", ready)
	ctl := make(chan Request)
	cfg.Control = ctl
	cfg.Restart = RestartAlways
	cfg.Backoff = Backoff{Min: time.Hour, Max: time.Hour}
	var ev events
	done := make(chan *Result, 1)
	go func() { done <- run(t, context.Background(), cfg, &ev) }()
	testchild.WaitFile(t, ready)
	for len(ev.of(Restarting)) == 0 {
		time.Sleep(10 * time.Millisecond) // the child ran and the hour's backoff began
	}
	if r := ask(t, ctl, ActionSignal, syscall.SIGHUP); !errors.Is(r.Err, ErrNoChild) {
		t.Fatalf("signal in a backoff: %+v, want ErrNoChild", r)
	}
	os.Remove(ready)
	if r := ask(t, ctl, ActionRestart, 0); r.Err != nil || r.Pid != 0 || r.NewPid == 0 {
		t.Fatalf("restart in a backoff: %+v", r)
	}
	testchild.WaitFile(t, ready)
	ask(t, ctl, ActionStop, 0)
	if r := <-done; !r.Stopped {
		t.Fatalf("result %+v, want stopped", r)
	}
}

// --restart-every restarts on schedule as an asked restart does: never a
// crash loop, under any policy.
func TestRestartEveryNeverGivesUp(t *testing.T) {
	cfg := config(t, 64<<20, "sleep", "1h")
	cfg.RestartEvery, cfg.MaxRestarts, cfg.RestartWindow = time.Second, 1, time.Minute
	var ev events
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *Result, 1)
	go func() { done <- run(t, ctx, cfg, &ev) }()
	for i := 0; len(ev.of(Started)) < 4; i++ {
		if i > 800 {
			t.Fatalf("%d starts in 8s, want 4", len(ev.of(Started)))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	r := <-done
	if r.GaveUp != "" || r.Restarts < 3 {
		t.Fatalf("gave up %q, restarts %d", r.GaveUp, r.Restarts)
	}
	for _, e := range ev.of(RestartScheduled)[:3] {
		if e.Uptime < 950*time.Millisecond || e.Uptime > 1500*time.Millisecond {
			t.Errorf("scheduled after %s, want about 1s (at most 5%% early)", e.Uptime)
		}
	}
}

func TestScheduleDelayIsAtMostFivePercentEarly(t *testing.T) {
	for _, tc := range []struct {
		draw float64
		want time.Duration
	}{
		{0, 24 * time.Hour},
		{0.5, 24*time.Hour - 36*time.Minute},
		{0.999999, 24*time.Hour - 72*time.Minute + 4320*time.Microsecond},
	} {
		if got := scheduleDelay(24*time.Hour, func() float64 { return tc.draw }); got != tc.want {
			t.Errorf("draw %g: %s, want %s", tc.draw, got, tc.want)
		}
	}
	for range 1000 {
		if d := scheduleDelay(2*time.Second, nil); d > 2*time.Second || d < 1900*time.Millisecond {
			t.Fatalf("%s out of [1.9s, 2s]", d)
		}
	}
}

func TestControlWords(t *testing.T) {
	by := &Peer{Uid: 1000, Pid: 4242, Command: "guardrun"}
	for _, tc := range []struct {
		got, want string
	}{
		{Event{Kind: RestartAsked, Run: "api", Pid: 123, By: by}.Sentence(), "api is restarting (pid 123), as asked by uid 1000 pid 4242 (guardrun)"},
		{Event{Kind: StopAsked, Run: "api", By: by}.Sentence(), "api is stopping, as asked by uid 1000 pid 4242 (guardrun)"},
		{Event{Kind: SignalAsked, Run: "api", Pid: 123, Signal: "SIGUSR1", By: by}.Sentence(), "api (pid 123) was sent SIGUSR1, as asked by uid 1000 pid 4242 (guardrun)"},
		{Event{Kind: Restarting, Run: "api", Reason: ReasonAsked, By: by}.Sentence(), "api restarting now, as asked by uid 1000 pid 4242 (guardrun)"},
		{Event{Kind: Restarting, Run: "api", Reason: ReasonScheduled}.Sentence(), "api restarting now, on its --restart-every schedule"},
		{Event{Kind: Exited, Run: "api", Cause: CauseSignaled, Signal: "SIGTERM", ExitCode: 143, Reason: ReasonScheduled}.Sentence(),
			"api was stopped by signal 15 (SIGTERM) when guardrun restarted it on its --restart-every schedule"},
		{Reply{Action: ActionRestart, Run: "api", Pid: 123, NewPid: 456, Done: true}.Sentence(), "restarted api (pid 123 -> 456)"},
		{Reply{Action: ActionStop, Run: "api", ExitCode: 143, Done: true}.Sentence(), "stopped api (guardrun exits 143)"},
		{Reply{Action: ActionSignal, Run: "api", Pid: 123, Signal: syscall.SIGUSR1, Done: true}.Sentence(), "sent SIGUSR1 to api (pid 123)"},
		{Reply{Action: ActionRestart, Run: "api", Pid: 123, Err: ErrStopping}.Sentence(), "cannot restart api (pid 123): it is stopping"},
		{RestartWords(RestartWhy(Event{Reason: ReasonAsked}), by.String()), "asked by uid 1000 pid 4242 (guardrun)"},
		{RestartWhy(Event{Cause: CauseSignaled, ExitCode: 137}), "crash"},
		{RestartWhy(Event{Cause: CauseOOMKill}), "oom_kill"},
	} {
		if tc.got != tc.want {
			t.Errorf("got  %q\nwant %q", tc.got, tc.want)
		}
	}
}
