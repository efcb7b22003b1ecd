package supervise

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
)

// recorder collects events; cancel, when set, ends the run at a chosen one.
type recorder struct {
	mu     sync.Mutex
	events []Event
	at     func(Event) bool
	cancel context.CancelFunc
}

func (r *recorder) sink(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	if r.at != nil && r.at(e) {
		r.cancel()
	}
}

func (r *recorder) count(k Kind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func (r *recorder) kinds() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []string
	for _, e := range r.events {
		ks = append(ks, string(e.Kind))
	}
	return strings.Join(ks, " ")
}

func watched(t *testing.T, cfg Config, at func(Event) bool) (*Result, *recorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{at: at, cancel: cancel}
	return run(t, ctx, cfg, ObserverFunc(rec.sink)), rec
}

func TestOOMKilledChildIsRestartedThenGivenUpOn(t *testing.T) {
	cfg := config(t, 64<<20, "leak", "4")
	cfg.Restart, cfg.MaxRestarts, cfg.RestartWindow = RestartOnFailure, 2, time.Minute
	r, rec := watched(t, cfg, nil)
	// Exactly the configured count: 2 restarts, so 3 children, then give up.
	if got, want := rec.kinds(), "started oom_kill exited restarting started oom_kill exited restarting started oom_kill exited gave_up"; got != want {
		t.Fatalf("events:\n %s\nwant:\n %s", got, want)
	}
	if r.ExitCode != ExitOOM || r.Restarts != 2 || !strings.Contains(r.GaveUp, "2 restarts in ") {
		t.Fatalf("exit %d restarts %d gave up %q", r.ExitCode, r.Restarts, r.GaveUp)
	}
	if s := r.Summary(); !strings.HasPrefix(s, "gave up on "+cfg.Name+", a crash loop: 2 restarts in ") || !strings.Contains(s, "last: was killed by the kernel OOM killer at its 64 MiB ceiling") {
		t.Fatalf("summary %q", s)
	}
}

func TestRestartAtStopsTheChildGracefullyBeforeTheCeiling(t *testing.T) {
	file := filepath.Join(t.TempDir(), "term")
	cfg := config(t, 256<<20, "graceful-leak", "1", file)
	cfg.Restart, cfg.RestartAt, cfg.RestartAtGrace = RestartAlways, 64<<20, 200*time.Millisecond
	starts := 0
	r, rec := watched(t, cfg, func(e Event) bool {
		if e.Kind == Started {
			starts++
		}
		return starts == 2
	})
	if got := rec.kinds(); !strings.HasPrefix(got, "started threshold_crossed memory_restart exited restarting started") {
		t.Fatalf("events: %s", got)
	}
	if n := rec.count(OOMKill); n != 0 {
		t.Fatalf("%d OOM kills; the restart must come before the ceiling", n)
	}
	ex := rec.events[3]
	if ex.Cause != "exited" || ex.ExitCode != 0 || ex.Reason != "restart_at" {
		t.Fatalf("first child ended %+v; want a clean exit 0 for restart_at", ex)
	}
	if got := testchild.WaitFile(t, file); !strings.HasPrefix(got, "terminated holding ") {
		t.Fatalf("the child did not see the stop signal: %q", got)
	}
	if !r.Stopped {
		t.Fatal("the run was not stopped at the second start")
	}
}

func TestStartupSpikeDoesNotRestart(t *testing.T) {
	// A spike of the working set over the threshold that falls back
	// within the grace is not restarted.
	cfg := config(t, 256<<20, "spike", "65", "100ms")
	cfg.Restart, cfg.RestartAt, cfg.RestartAtGrace = RestartAlways, 64<<20, 3*time.Second
	crossed := time.Time{}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{}
	obs := ObserverFunc(func(e Event) {
		rec.sink(e)
		if e.Kind == ThresholdCrossed && crossed.IsZero() {
			crossed = time.Now()
			// Stop well after the grace period ended.
			go func() { time.Sleep(cfg.RestartAtGrace + 2*time.Second); cancel(); close(done) }()
		}
	})
	go func() {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cancel() // no crossing at all: end the run, the checks below fail
		}
	}()
	run(t, ctx, cfg, obs)
	if rec.count(ThresholdCrossed) != 1 || rec.count(Restarting) != 0 || rec.count(Started) != 1 {
		t.Fatalf("events: %s; want one crossing and no restart", rec.kinds())
	}
}

func TestStopDuringBackoffStartsNothing(t *testing.T) {
	cfg := config(t, 64<<20, "exit", "1")
	cfg.Restart = RestartAlways
	cfg.Backoff = Backoff{Min: time.Hour, Max: time.Hour, Factor: 2}
	r, rec := watched(t, cfg, func(e Event) bool { return e.Kind == Restarting })
	if got, want := rec.kinds(), "started exited restarting stopping stopped"; got != want {
		t.Fatalf("events: %s, want %s", got, want)
	}
	// The run ends by the stop, not by the last child's status: a unit
	// stopped in its restart backoff is left inactive, as systemd leaves
	// one stopped in its own auto-restart wait, not failed with the
	// child's code.
	if !r.Stopped || r.ExitCode != 143 || r.ExitSignal != unix.SIGTERM {
		t.Fatalf("stopped=%v exit=%d signal=%v; want 143 by SIGTERM", r.Stopped, r.ExitCode, r.ExitSignal)
	}
	if want := "stopped while waiting to restart, as asked; before it, grtest"; !strings.Contains(r.Summary(), want) {
		t.Fatalf("summary %q lacks %q", r.Summary(), want)
	}
}

func TestRestartWaitsForMemory(t *testing.T) {
	cfg := config(t, 64<<20, "exit", "1")
	cfg.Restart, cfg.MaxRestarts, cfg.RestartWindow = RestartOnFailure, 1, time.Minute
	cfg.Backoff = Backoff{Min: time.Millisecond, Max: time.Millisecond, Factor: 1}
	// MemAvailable as the host would report it: enough for the first start,
	// short twice before the restart, then enough again.
	calls := 0
	cfg.Preflight = Preflight{Need: 100, Avail: func() (uint64, error) {
		calls++
		if calls == 2 || calls == 3 {
			return 10, nil
		}
		return 1000, nil
	}}
	_, rec := watched(t, cfg, nil)
	if got, want := rec.kinds(), "started exited restarting preflight_wait started exited gave_up"; got != want {
		t.Fatalf("events: %s, want %s", got, want)
	}
}

func TestHeapHints(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "app")
	os.WriteFile(script, []byte("#!/usr/bin/env node\nconsole.log(1)\n"), 0o755)
	self, _ := os.Executable()
	const ceiling = 1 << 30
	for _, tc := range []struct {
		argv0, env, want string
	}{
		{"node", "", "NODE_OPTIONS=--max-old-space-size=768"},
		{"/usr/bin/npm", "NODE_OPTIONS=--inspect", "NODE_OPTIONS=--inspect --max-old-space-size=768"},
		{"node", "NODE_OPTIONS=--max-old-space-size=100", ""},
		{script, "", "NODE_OPTIONS=--max-old-space-size=768"},
		{self, "", "GOMEMLIMIT=921MiB"},
		{self, "GOMEMLIMIT=1GiB", ""},
		{"java", "", "JAVA_TOOL_OPTIONS=-XX:MaxRAM=1073741824 -XX:MinRAMPercentage=75.0 -XX:MaxRAMPercentage=75.0 -XX:+ExitOnOutOfMemoryError"},
		{"java", "JAVA_TOOL_OPTIONS=-Xmx2g", ""},
		{"/bin/sh", "", ""},
	} {
		env := []string{"PATH=/usr/bin"}
		if tc.env != "" {
			env = append(env, tc.env)
		}
		got, notes := hintsFor([]string{tc.argv0}, env, ceiling)
		if fmt.Sprint(notes) != fmt.Sprint(nonEmpty(tc.want)) {
			t.Errorf("%s with %q: set %v, want %q", tc.argv0, tc.env, notes, tc.want)
		}
		if tc.want != "" && got[len(got)-1] != tc.want {
			t.Errorf("%s: env ends %q, want %q", tc.argv0, got[len(got)-1], tc.want)
		}
	}
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func TestPressureRestartsTheChildV2(t *testing.T) {
	cfg := config(t, 256<<20, "graceful-leak", "2", filepath.Join(t.TempDir(), "term"))
	testchild.RequireCgroup(t, cfg.Backend, "v2")
	// memory.high far below what the child touches: the kernel throttles it
	// in reclaim, a memory stall that the PSI trigger reports.
	cfg.Limits.High = 16 << 20
	cfg.Pressure, cfg.RestartOnPressure, cfg.Restart = "some 10000 500000", true, RestartAlways
	starts := 0
	_, rec := watched(t, cfg, func(e Event) bool {
		if e.Kind == Started {
			starts++
		}
		return starts == 2
	})
	if got := rec.kinds(); !strings.HasPrefix(got, "started pressure memory_restart exited restarting started") {
		t.Fatalf("events: %s", got)
	}
	if ex := rec.events[3]; ex.Reason != "pressure" || ex.ExitCode != 0 {
		t.Fatalf("first child ended %+v; want a clean exit for pressure", ex)
	}
}

func TestOOMKillCarriesTheDiagnosis(t *testing.T) {
	cfg := config(t, 64<<20, "leak", "1")
	cfg.Sample = 50 * time.Millisecond
	_, rec := watched(t, cfg, nil)
	var oom *Event
	for i := range rec.events {
		if rec.events[i].Kind == OOMKill {
			oom = &rec.events[i]
		}
	}
	if oom == nil || oom.Diagnosis == nil {
		t.Fatalf("no oom_kill with a diagnosis in %s", rec.kinds())
	}
	d := oom.Diagnosis
	if len(d.MemoryStat) == 0 || (d.MemoryStat["anon"] == 0 && d.MemoryStat["total_rss"] == 0 && d.MemoryStat["rss"] == 0) {
		t.Errorf("memory.stat: %v", d.MemoryStat)
	}
	if len(d.Top) == 0 || d.Top[0].RSS < 8<<20 || d.Top[0].Command == "" {
		t.Errorf("largest processes: %+v", d.Top)
	}
	if len(d.Growth) < 2 || d.Growth[len(d.Growth)-1].Usage <= d.Growth[0].Usage {
		t.Errorf("growth does not show the leak: %+v", d.Growth)
	}
	if want := fmt.Sprintf("Killed process %d (", oom.Pid); !strings.Contains(d.OOMReport, want) {
		t.Errorf("kernel report %q lacks %q", d.OOMReport, want)
	}
}

// The kernel rate-limits its "oom-kill:" summary but not the "Killed
// process" line; without the summary, the line for one of the group's
// pids is the report. A line is put in the real kernel log (root may
// write /dev/kmsg) and read back.
func TestOOMReportWithoutTheRateLimitedSummary(t *testing.T) {
	testchild.RequireCgroup(t, cgroup.Discover().Version(), "")
	// kmsg stamps with the scheduler clock, which may trail
	// CLOCK_MONOTONIC by a little; the pid is unique enough anyway.
	since := monotonicUsec() - 1e6
	pid := 4000000 + os.Getpid()%100000 // above pid_max's default: no real process
	line := fmt.Sprintf("guardrun test: Memory cgroup out of memory: Killed process %d (child) total-vm:1kB", pid)
	if err := os.WriteFile("/dev/kmsg", []byte(line+"\n"), 0); err != nil {
		t.Fatalf("write /dev/kmsg: %v", err)
	}
	recs := oomRecords("grtest-no-such-group", since, []int{1, pid}, 1)
	if len(recs) != 1 || !strings.HasSuffix(recs[0].line, fmt.Sprintf("Killed process %d (child) total-vm:1kB", pid)) {
		t.Fatalf("records %+v", recs)
	}
	if v := recs[0].victim; v.Pid != pid || v.Command != "child" {
		t.Errorf("victim %+v, want pid %d (child)", v, pid)
	}
	if got := oomRecords("grtest-no-such-group", since, []int{1}, 0); len(got) != 0 {
		t.Errorf("a line for a pid not in the group was taken: %+v", got)
	}
}
