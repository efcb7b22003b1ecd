package supervise

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSoakCrashRestarts restarts a child that fails at once, with no
// backoff, many times over, and checks that guardrun's own goroutines,
// open files and memory end where they began. CI runs a few hundred;
// GUARDRUN_SOAK_RESTARTS=10000 runs the full soak (scripts/soak).
func TestSoakCrashRestarts(t *testing.T) {
	n := 300
	if v, err := strconv.Atoi(os.Getenv("GUARDRUN_SOAK_RESTARTS")); err == nil && v > 0 {
		n = v
	}
	cfg := config(t, 64<<20, "exit", "1")
	cfg.Restart, cfg.MaxRestarts = RestartAlways, 0
	cfg.Backoff = Backoff{Factor: 1}
	cfg.Sample = 10 * time.Millisecond // the diagnosis path too
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A warm-up run first, so the runtime's pools and the first groups'
	// one-time costs are in the baseline; then the footprint between two
	// quiet points, before and after the soak, when no child runs.
	starts, stopAt := 0, 10
	obs := ObserverFunc(func(e Event) {
		if e.Kind == Started {
			if starts++; starts == stopAt {
				cancel()
			}
		}
	})
	run(t, ctx, cfg, obs)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	starts, stopAt = 0, n
	base := measure()
	start := time.Now()
	run(t, ctx, cfg, obs)
	after := measure()
	if after.fds > base.fds {
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			t.Logf("fd %s -> %s", e.Name(), l)
		}
	}
	t.Logf("%d restarts in %s (%.2f ms each); goroutines %d -> %d, fds %d -> %d, heap %d -> %d KiB, rss %d -> %d KiB",
		n, time.Since(start).Round(time.Millisecond), float64(time.Since(start).Milliseconds())/float64(n),
		base.goroutines, after.goroutines, base.fds, after.fds, base.heap>>10, after.heap>>10, base.rss>>10, after.rss>>10)
	if after.goroutines > base.goroutines+2 || after.fds > base.fds {
		t.Fatalf("leak: goroutines %d -> %d, fds %d -> %d", base.goroutines, after.goroutines, base.fds, after.fds)
	}
	// The heap is measured after a GC; a few hundred KiB is allocator
	// noise, a leak of one object per restart over thousands is not.
	if after.heap > base.heap+2<<20 {
		t.Fatalf("heap grew from %d to %d KiB over %d restarts", base.heap>>10, after.heap>>10, n)
	}
}

type footprint struct {
	goroutines, fds int
	heap, rss       uint64
}

func measure() footprint {
	runtime.GC()
	runtime.GC() // and what the first one's finalizers freed
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds, _ := os.ReadDir("/proc/self/fd")
	var rss uint64
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseUint(f[1], 10, 64)
			rss = pages * uint64(os.Getpagesize())
		}
	}
	return footprint{goroutines: runtime.NumGoroutine(), fds: len(fds), heap: ms.HeapAlloc, rss: rss}
}

// TestOOMKillsInARow: a child OOM-killed again and again under --restart
// always: every kill is detected and reported, guardrun survives each, and
// no group is left behind. CI runs 20; GUARDRUN_SOAK_OOMS=100 the full one.
func TestOOMKillsInARow(t *testing.T) {
	n := 20
	if v, err := strconv.Atoi(os.Getenv("GUARDRUN_SOAK_OOMS")); err == nil && v > 0 {
		n = v
	}
	cfg := config(t, 32<<20, "leak", "4")
	cfg.Restart, cfg.MaxRestarts = RestartAlways, 0
	cfg.Backoff = Backoff{Factor: 1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ooms, exits := 0, 0
	obs := ObserverFunc(func(e Event) {
		switch e.Kind {
		case OOMKill:
			ooms++
		case Exited:
			if exits++; e.Cause != "oom_kill" {
				t.Errorf("exit %d: cause %s, want oom_kill", exits, e.Cause)
			}
			if exits == n {
				cancel()
			}
		}
	})
	r := run(t, ctx, cfg, obs) // run checks that the group is gone
	// The stop comes in the backoff after the nth kill: the run ends by
	// it (143), with the last child's cause kept.
	if ooms != n || exits != n || r.Cause != CauseOOMKill || r.ExitCode != 143 {
		t.Fatalf("%d OOM kills reported, %d exits, last %s, exit %d; want %d, %d, oom_kill, 143", ooms, exits, r.Cause, r.ExitCode, n, n)
	}
}
