package supervise

import (
	"strings"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"golang.org/x/sys/unix"
)

// Every kind has its sentence, naming the run, with no formatting slip.
func TestEveryKindHasASentence(t *testing.T) {
	kinds := []Kind{Started, Exited, OOMKill, ThresholdCrossed, PressureStall, PreflightWait, PreflightFailed,
		Restarting, GaveUp, Stopped, Stopping, LeakSuspected, Sampled, HeapOOM, MemoryRestart}
	for _, k := range kinds {
		e := Event{Kind: k, Run: "api", Pid: 42, Usage: 300 << 20, WorkingSet: 200 << 20, Cache: 100 << 20, Ceiling: 512 << 20,
			Peak: 310 << 20, Threshold: 460 << 20, Available: 1 << 30, Need: 2 << 30, Delay: time.Second, Uptime: 3 * time.Second,
			Detail: "why", Trigger: "some 100000 1000000", Cause: CauseExited, ExitCode: 1}
		s := e.Sentence()
		if !strings.Contains(s, "api") || strings.Contains(s, "%!") || s == "api: "+string(k) {
			t.Errorf("%s: %q", k, s)
		}
	}
}

// The summary line is the exited event's sentence, with the whole run's
// figures inside its parentheses.
func TestSummaryIsTheExitedSentence(t *testing.T) {
	r := &Result{Name: "api", Pid: 42, Cause: CauseOOMKill, ExitCode: ExitOOM, Duration: 4200 * time.Millisecond,
		Stats: cgroup.Stats{Peak: 512 << 20, Ceiling: 512 << 20, OOMKills: 1}, Restarts: 2,
		Run: RunTotals{Children: 3, Peak: 512 << 20, OOMKills: 3}}
	r.Status = unix.WaitStatus(unix.SIGKILL)
	want := "api was killed by the kernel OOM killer at its 512 MiB ceiling (peak 512 MiB, ran 4.2s, 2 restarts before it; the whole run: peak 512 MiB, 3 OOM kills)"
	if got := r.Summary(); got != want {
		t.Errorf("summary\n got %q\nwant %q", got, want)
	}
	if e := r.exited(); !strings.HasPrefix(r.Summary(), strings.TrimSuffix(e.Sentence(), ")")) {
		t.Errorf("summary %q does not begin with the exited sentence %q", r.Summary(), e.Sentence())
	}
	for _, tc := range []struct {
		r    *Result
		want string
	}{
		{&Result{Name: "api", Cause: CauseStopped}, "api: stopped while waiting for memory; nothing was started"},
		{&Result{Name: "api", Cause: CausePreflightFailed, Err: &PreflightError{Need: 2 << 30, Available: 1 << 30}}, "api: preflight: 1 GiB available, 2 GiB needed"},
		{&Result{Name: "api", GaveUp: "3 restarts in 1s"}, "gave up on api, a crash loop: 3 restarts in 1s"},
	} {
		if got := tc.r.Summary(); got != tc.want {
			t.Errorf("summary\n got %q\nwant %q", got, tc.want)
		}
	}
}

// decide is the one exit policy: every way a run ends has its code.
func TestDecideIsTheExitPolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *Result
		code int
		sig  unix.Signal
	}{
		{"no group", failed("api", cgroup.ErrBusy), ExitInternal, 0},
		{"preflight", failed("api", &PreflightError{}), ExitInternal, 0},
		{"not found", failed("api", &StartError{Command: "x", Err: unix.ENOENT}), ExitNotFound, 0},
		{"stopped waiting", &Result{Cause: CauseStopped}, 143, unix.SIGTERM},
		// Stopped in a backoff, after an OOM kill: the run ends by the
		// stop's signal, not with the last child's 137.
		{"stopped in a backoff", &Result{Pid: 1, Cause: CauseOOMKill, ExitCode: 137, Stopped: true, Halt: unix.SIGINT}, 130, unix.SIGINT},
		{"stopped child", &Result{Pid: 1, Cause: CauseSignaled, ExitCode: 143, Asked: true, Status: unix.WaitStatus(unix.SIGTERM)}, 143, unix.SIGTERM},
		{"forced child", &Result{Pid: 1, Cause: CauseSignaled, ExitCode: 137, Asked: true, Forced: true, Status: unix.WaitStatus(unix.SIGKILL)}, 137, 0},
		{"exit 3", &Result{Pid: 1, Cause: CauseExited, ExitCode: 3}, 3, 0},
	} {
		tc.r.decide()
		if tc.r.ExitCode != tc.code || tc.r.ExitSignal != tc.sig {
			t.Errorf("%s: exit %d signal %v; want %d %v", tc.name, tc.r.ExitCode, tc.r.ExitSignal, tc.code, tc.sig)
		}
	}
}
