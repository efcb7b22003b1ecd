package supervise

import (
	"testing"
	"time"
)

func TestBackoffDoublesToTheCapAndResets(t *testing.T) {
	top := func() float64 { return 0.999999999 } // the top of the jitter range
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, Factor: 2, Reset: 10 * time.Second, Jitter: top}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Next(time.Second).Round(time.Millisecond); got != w*time.Millisecond {
			t.Fatalf("delay %d = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	// A child that stayed up past Reset starts the schedule over.
	if got := b.Next(10 * time.Second).Round(time.Millisecond); got != 100*time.Millisecond {
		t.Fatalf("after a long run: %v, want 100ms", got)
	}
	if got := b.Next(0).Round(time.Millisecond); got != 200*time.Millisecond {
		t.Fatalf("then: %v, want 200ms", got)
	}
}

func TestBackoffJitterStaysInTheLowerHalf(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Second, Factor: 2, Jitter: func() float64 { return 0 }}
	if got := b.Next(0); got != 500*time.Millisecond {
		t.Fatalf("jitter 0: %v, want 500ms", got)
	}
	b.Jitter = func() float64 { return 0.5 }
	if got := b.Next(0); got != 750*time.Millisecond {
		t.Fatalf("jitter 0.5: %v, want 750ms", got)
	}
	// The real jitter source stays in [d/2, d].
	b.Jitter = nil
	for range 1000 {
		if got := b.Next(0); got < 500*time.Millisecond || got > time.Second {
			t.Fatalf("jittered delay %v outside [500ms, 1s]", got)
		}
	}
}

func TestBackoffZeroIsZero(t *testing.T) {
	b := Backoff{Factor: 2}
	for range 3 {
		if got := b.Next(0); got != 0 {
			t.Fatalf("backoff 0: %v", got)
		}
	}
}

func TestCrashLoopWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	l := crashLoop{max: 3, window: time.Minute}
	for i := range 3 {
		if l.exceeded(now.Add(time.Duration(i) * time.Second)) {
			t.Fatalf("restart %d counted as a loop", i+1)
		}
	}
	if !l.exceeded(now.Add(3 * time.Second)) {
		t.Fatal("the 4th restart within a minute is not a loop")
	}
	// Restarts that fell out of the window do not count.
	l = crashLoop{max: 3, window: time.Minute}
	for i := range 10 {
		if l.exceeded(now.Add(time.Duration(i) * 30 * time.Second)) {
			t.Fatalf("restart %d, 30s apart, counted as a loop", i+1)
		}
	}
	// max 0: never gives up.
	l = crashLoop{}
	for i := range 100 {
		if l.exceeded(now.Add(time.Duration(i))) {
			t.Fatal("max-restarts 0 gave up")
		}
	}
}
