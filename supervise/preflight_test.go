package supervise

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeSleep advances a counter instead of sleeping: time is injected.
func fakeSleep(total *time.Duration) func(context.Context, time.Duration) error {
	return func(ctx context.Context, d time.Duration) error {
		*total += d
		return ctx.Err()
	}
}

func TestPreflightPassesWithRoom(t *testing.T) {
	p := Preflight{Need: 100, Avail: func() (uint64, error) { return 100, nil }}
	if err := p.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestPreflightFailsAtOnceWithoutWait(t *testing.T) {
	var slept time.Duration
	p := Preflight{Need: 100, Avail: func() (uint64, error) { return 99, nil }, Sleep: fakeSleep(&slept)}
	err := p.Check(context.Background())
	var pe *PreflightError
	if !errors.As(err, &pe) || pe.Available != 99 || pe.Need != 100 || slept != 0 {
		t.Fatalf("got %v, slept %v", err, slept)
	}
}

func TestPreflightWaitsForMemory(t *testing.T) {
	var slept time.Duration
	calls, waits := 0, 0
	p := Preflight{
		Need: 100, Wait: 10 * time.Second, Interval: time.Second,
		Avail:   func() (uint64, error) { calls++; return uint64(calls * 30), nil },
		Sleep:   fakeSleep(&slept),
		Waiting: func(uint64) { waits++ },
	}
	if err := p.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls != 4 || slept != 3*time.Second || waits != 1 {
		t.Fatalf("calls=%d slept=%v waits=%d", calls, slept, waits)
	}
}

func TestPreflightWaitRunsOut(t *testing.T) {
	var slept time.Duration
	p := Preflight{Need: 100, Wait: 2500 * time.Millisecond, Interval: time.Second,
		Avail: func() (uint64, error) { return 1, nil }, Sleep: fakeSleep(&slept)}
	err := p.Check(context.Background())
	var pe *PreflightError
	if !errors.As(err, &pe) || pe.Waited != 2500*time.Millisecond || slept != pe.Waited {
		t.Fatalf("got %v, slept %v", err, slept)
	}
}

func TestPreflightStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var slept time.Duration
	p := Preflight{Need: 100, Wait: time.Hour, Avail: func() (uint64, error) { return 1, nil }, Sleep: fakeSleep(&slept)}
	if err := p.Check(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}

func TestMemAvailableReadsTheHost(t *testing.T) {
	a, err := MemAvailable()
	if err != nil || a == 0 {
		t.Fatalf("MemAvailable = %d, %v", a, err)
	}
}
