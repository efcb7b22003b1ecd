package supervise

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"golang.org/x/sys/unix"
)

// Exit codes guardrun itself uses, as shells and `docker run` do.
const (
	ExitInternal    = 125 // guardrun failed: bad input, no group, preflight
	ExitNotExec     = 126 // the command exists but cannot be executed
	ExitNotFound    = 127 // the command was not found
	ExitOOM         = 137 // 128 + SIGKILL: the OOM killer ended the child
	exitSignalsBase = 128
)

// Result is how a run ended.
type Result struct {
	Name, Backend, Path string
	Pid                 int
	Status              unix.WaitStatus
	Stats               cgroup.Stats
	Duration            time.Duration
	// Asked: the child ended after guardrun was asked to stop it (TERM,
	// INT), as Event.Asked says.
	Asked bool
	// Stopped: the run ended because guardrun was asked to stop, with a
	// child (Asked) or while none ran: before the first start (Cause
	// CauseStopped) or between children, in a backoff or a preflight wait.
	Stopped bool
	// Halt is the signal that asked for a stop while no child ran (TERM
	// or INT; 0 is TERM): guardrun ends by it, as it ends by the child's
	// when it stopped one.
	Halt   unix.Signal
	Forced bool // the group was killed: stop timeout or a second stop request
	// Reason is why guardrun itself stopped the child to restart it:
	// ReasonRestartAt, ReasonPressure, ReasonAsked or ReasonScheduled;
	// "" otherwise.
	Reason string
	// Sampled: guardrun's RSS sampler held the child's ceiling, a --max
	// below the limit of the container guardrun observes (cgroup.Enclosing).
	Sampled  bool
	Restarts int    // restarts before this child
	GaveUp   string // why guardrun gave up on a crash loop; "" if it did not

	// Cause is how the last child ended (CauseExited, CauseSignaled,
	// CauseOOMKill, CauseHeapOOM) or why none was started
	// (CausePreflightFailed, CauseStopped, CauseError).
	Cause string
	// ExitCode is what guardrun exits with: the child's own, even for a
	// heap death; 125, 126, 127 or 143 when no child ran (see decide).
	ExitCode int
	// ExitSignal, when set, is the signal guardrun ends itself by instead
	// of exiting: the child ended by the signal guardrun was asked to pass
	// on, and a shell must still see 128+N and systemd a clean stop.
	ExitSignal unix.Signal
	// Err is guardrun's own failure when no child ran or one could not be
	// started; nil otherwise.
	Err error
	// Heap is the runtime's report of a heap death in the group: the
	// child's own (Cause heap_oom) or another process's; nil for none.
	Heap *RuntimeReport
	// HeapSetting says what limited that heap and who set it, e.g.
	// "--max-old-space-size, set by guardrun from the 256 MiB ceiling".
	HeapSetting string
	// Run is the whole run so far, this child included.
	Run RunTotals
}

// RunTotals are the figures of a whole run, over all its children: the
// summary line says them, not only the last child's.
type RunTotals struct {
	Children int
	Peak     uint64 // the highest peak of any child
	OOMKills uint64 // processes the kernel's OOM killer killed, in all children's groups
	HeapOOMs int    // children in whose group a runtime died of its heap limit
}

func (t *RunTotals) add(r *Result) {
	t.Children++
	t.Peak = max(t.Peak, r.Stats.Peak)
	t.OOMKills += r.Stats.OOMKills
	if r.Heap != nil {
		t.HeapOOMs++
	}
}

// failed is the Result of a run that could not start a child: err is why.
func failed(name string, err error) *Result {
	r := &Result{Name: name, Cause: CauseError, Err: err}
	var pe *PreflightError
	if errors.As(err, &pe) {
		r.Cause = CausePreflightFailed
	}
	r.decide()
	return r
}

// decide settles what guardrun exits with, for every way a run ends: the
// one place that does. A child's own code is set by classify.
func (r *Result) decide() {
	var se *StartError
	switch {
	case errors.As(r.Err, &se) && r.Pid == 0:
		r.ExitCode = se.ExitCode()
	case r.Cause == CauseError || r.Cause == CausePreflightFailed:
		r.ExitCode = ExitInternal
	}
	r.ExitSignal = 0
	switch {
	case r.Asked && !r.Forced && r.Status.Signaled() && r.Status.Signal() != unix.SIGKILL:
		r.ExitSignal = r.Status.Signal()
	case (r.Stopped || r.Cause == CauseStopped) && !r.Asked:
		// Stopped while no child ran: the last child's status is not
		// the run's, and a service manager must see the stop it asked
		// for (a unit left inactive, not failed with the last child's
		// 137).
		r.ExitSignal = r.Halt
		if r.ExitSignal == 0 {
			r.ExitSignal = unix.SIGTERM
		}
		r.ExitCode = exitSignalsBase + int(r.ExitSignal)
	}
}

// classify tells an OOM kill from any other death. The child died of an
// OOM kill when SIGKILL ended it and the group's oom_kill counter moved,
// and guardrun itself did not kill the group.
func (r *Result) classify() {
	switch {
	case r.Status.Signaled() && r.Status.Signal() == unix.SIGKILL && r.Stats.OOMKills > 0 && !r.Forced:
		r.Cause, r.ExitCode = CauseOOMKill, ExitOOM
	case r.Status.Signaled():
		r.Cause, r.ExitCode = CauseSignaled, exitSignalsBase+int(r.Status.Signal())
	default:
		r.Cause, r.ExitCode = CauseExited, r.Status.ExitStatus()
	}
}

// OOMKilled reports whether the kernel's OOM killer (or, without a cgroup,
// guardrun's sampler) ended the child.
func (r *Result) OOMKilled() bool { return r.Cause == CauseOOMKill }

// oomWho names the killer: the kernel, or guardrun's sampler without a
// cgroup or below a container's limit. There both may kill, the sampler at
// --max and the kernel at the container's limit; one count holds both, and
// the sampler, which fires first, is named.
func (r *Result) oomWho() string {
	if r.Backend == "none" {
		return "guardrun (no cgroup: sampled RSS)"
	}
	if r.Sampled {
		return "guardrun (sampled RSS: --max is below the container's limit)"
	}
	return "the kernel OOM killer"
}

// exited is the child's end as an event: what the exited event says, and
// what the summary line says it with.
func (r *Result) exited() Event {
	e := Event{Kind: Exited, Run: r.Name, Pid: r.Pid, Cause: r.Cause, ExitCode: r.ExitCode, Peak: r.Stats.Peak, Ceiling: r.Stats.Ceiling,
		Uptime: r.Duration, Restarts: r.Restarts, Reason: r.Reason, Asked: r.Asked, Forced: r.Forced, OOMKills: r.Stats.OOMKills,
		Killer: r.oomWho(), Heap: r.Heap, HeapSetting: r.HeapSetting}
	if r.Status.Signaled() {
		e.Signal = signalName(r.Status.Signal())
	}
	return e
}

// StartError is a child that could not be started: not found, not
// executable, or refused by the kernel.
type StartError struct {
	Command string
	Err     error
}

func (e *StartError) Error() string { return fmt.Sprintf("%s: %v", e.Command, e.Err) }
func (e *StartError) Unwrap() error { return e.Err }

// ExitCode maps a start failure the way shells do: 127 not found, 126
// found but not executable, 125 anything else.
func (e *StartError) ExitCode() int {
	switch {
	case errors.Is(e.Err, exec.ErrNotFound), errors.Is(e.Err, os.ErrNotExist):
		return ExitNotFound
	case errors.Is(e.Err, os.ErrPermission), errors.Is(e.Err, unix.ENOEXEC), errors.Is(e.Err, unix.EISDIR):
		return ExitNotExec
	}
	return ExitInternal
}

// ParseSignal reads a signal by name ("TERM", "SIGTERM", "term") or number.
func ParseSignal(s string) (unix.Signal, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(u, "SIG") {
		u = "SIG" + u
	}
	if sig := unix.SignalNum(u); sig != 0 {
		return sig, nil
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && n > 0 && n < 65 && fmt.Sprint(n) == strings.TrimSpace(s) {
		return unix.Signal(n), nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}
