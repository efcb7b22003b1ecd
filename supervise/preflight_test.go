package supervise

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"
)

// preflighter is a supervisor with nothing but what its preflight uses:
// a real timer, the stop signals, its events.
func preflighter(ctx context.Context, p Preflight) (*supervisor, *[]Event) {
	var got []Event
	s := &supervisor{cfg: Config{Preflight: p, Now: time.Now}, ctx: ctx, sigs: make(chan os.Signal, 1),
		em: &emitter{run: "pf", log: slog.New(slog.DiscardHandler), now: time.Now, obs: []Observer{ObserverFunc(func(e Event) { got = append(got, e) })}}}
	return s, &got
}

func kindsOf(es []Event) []Kind {
	var ks []Kind
	for _, e := range es {
		ks = append(ks, e.Kind)
	}
	return ks
}

func TestPreflightPassesWithRoom(t *testing.T) {
	s, got := preflighter(context.Background(), Preflight{Need: 100, Avail: func() (uint64, error) { return 100, nil }})
	if ok, err := s.preflight(false, &Backoff{}); !ok || err != nil || len(*got) != 0 {
		t.Fatalf("ok=%v err=%v events %v", ok, err, kindsOf(*got))
	}
}

func TestPreflightFailsAtOnceWithoutWait(t *testing.T) {
	s, got := preflighter(context.Background(), Preflight{Need: 100, Avail: func() (uint64, error) { return 99, nil }})
	ok, err := s.preflight(false, &Backoff{})
	var pe *PreflightError
	if ok || !errors.As(err, &pe) || pe.Available != 99 || pe.Need != 100 || pe.Waited != 0 {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	if k := kindsOf(*got); len(k) != 1 || k[0] != PreflightFailed {
		t.Fatalf("events %v; want one preflight_failed", k)
	}
}

func TestPreflightWaitsForMemory(t *testing.T) {
	calls := 0
	s, got := preflighter(context.Background(), Preflight{Need: 100, Wait: 10 * time.Second, Interval: 10 * time.Millisecond,
		Avail: func() (uint64, error) { calls++; return uint64(calls * 30), nil }})
	if ok, err := s.preflight(false, &Backoff{}); !ok || err != nil {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	if k := kindsOf(*got); calls != 4 || len(k) != 1 || k[0] != PreflightWait || (*got)[0].Delay != 10*time.Second {
		t.Fatalf("calls=%d events %v", calls, k)
	}
}

func TestPreflightWaitRunsOut(t *testing.T) {
	s, _ := preflighter(context.Background(), Preflight{Need: 100, Wait: 25 * time.Millisecond, Interval: 10 * time.Millisecond,
		Avail: func() (uint64, error) { return 1, nil }})
	ok, err := s.preflight(false, &Backoff{})
	var pe *PreflightError
	if ok || !errors.As(err, &pe) || pe.Waited != 25*time.Millisecond {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
}

// A stop while waiting ends the wait: no error, no start, and Stopping told.
func TestPreflightStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, got := preflighter(ctx, Preflight{Need: 100, Wait: time.Hour, Avail: func() (uint64, error) { return 1, nil }})
	ok, err := s.preflight(false, &Backoff{})
	if k := kindsOf(*got); ok || err != nil || len(k) != 2 || k[1] != Stopping {
		t.Fatalf("ok=%v err=%v events %v; want preflight_wait, stopping", ok, err, k)
	}
}

// A restart waits on the backoff, as long as it takes.
func TestPreflightRestartWaitsOnTheBackoff(t *testing.T) {
	calls := 0
	s, got := preflighter(context.Background(), Preflight{Need: 100, Wait: time.Millisecond,
		Avail: func() (uint64, error) { calls++; return uint64(calls * 10), nil }})
	b := &Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond, Factor: 2}
	if ok, err := s.preflight(true, b); !ok || err != nil || calls != 10 {
		t.Fatalf("ok=%v err=%v calls=%d", ok, err, calls)
	}
	if k := kindsOf(*got); len(k) != 1 || k[0] != PreflightWait {
		t.Fatalf("events %v; want one preflight_wait", k)
	}
}

func TestMemAvailableReadsTheHost(t *testing.T) {
	a, err := MemAvailable()
	if err != nil || a == 0 {
		t.Fatalf("MemAvailable = %d, %v", a, err)
	}
}

// A first start's wait is --preflight-wait: it leaves the restart backoff
// where it was, so the first restart still waits the least.
func TestPreflightFirstStartLeavesTheBackoff(t *testing.T) {
	calls := 0
	s, _ := preflighter(context.Background(), Preflight{Need: 100, Wait: time.Second, Interval: time.Millisecond,
		Avail: func() (uint64, error) { calls++; return uint64(calls * 20), nil }})
	b := &Backoff{Min: time.Millisecond, Max: time.Hour, Factor: 2}
	if ok, err := s.preflight(false, b); !ok || err != nil || calls != 5 {
		t.Fatalf("ok=%v err=%v calls=%d", ok, err, calls)
	}
	if b.next != 0 {
		t.Fatalf("the backoff moved on to %s during a first start's wait", b.next)
	}
}
