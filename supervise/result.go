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
	Stopped             bool // guardrun was asked to stop the child
	Forced              bool // the group was killed: stop timeout or a second stop request
	// Reason is why guardrun itself stopped the child to restart it:
	// "restart_at" or "pressure"; "" otherwise.
	Reason   string
	Restarts int    // restarts before this child
	GaveUp   string // why guardrun gave up on a crash loop; "" if it did not

	Cause    string // CauseExited, CauseSignaled, CauseOOMKill, CauseHeapOOM
	ExitCode int    // what guardrun exits with: the child's own, even for a heap death
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

// Summary is the one line a person reads at the end of a run, e.g.
// "app was killed by the kernel OOM killer at its 512 MiB ceiling (peak
// 512 MiB, ran 4.2s)".
func (r *Result) Summary() string {
	peak := "peak " + cgroup.FormatSize(r.Stats.Peak)
	if r.Cause != CauseOOMKill && r.Stats.Limit > 0 {
		peak += " of " + cgroup.FormatSize(r.Stats.Limit)
	}
	more := ""
	if r.Restarts > 0 {
		more = fmt.Sprintf(", %s before it", plural(uint64(r.Restarts), "restart", "restarts"))
	}
	if t := r.Run; t.Children > 1 {
		whole := []string{"peak " + cgroup.FormatSize(t.Peak)}
		if t.OOMKills > 0 {
			whole = append(whole, plural(t.OOMKills, "OOM kill", "OOM kills"))
		}
		if t.HeapOOMs > 0 {
			whole = append(whole, plural(uint64(t.HeapOOMs), "heap OOM", "heap OOMs"))
		}
		more += "; the whole run: " + strings.Join(whole, ", ")
	}
	line := fmt.Sprintf("%s %s (%s, ran %s%s)", r.Name, r.what(), peak, fmtDuration(r.Duration), more)
	if r.GaveUp != "" {
		line = fmt.Sprintf("gave up on %s, a crash loop: %s", r.Name, r.GaveUp)
	}
	return line
}

// what says how the child ended, in words: "exited 3", "was killed by ...".
func (r *Result) what() string {
	ceiling := cgroup.FormatSize(r.Stats.Limit)
	var what string
	switch {
	case r.Cause == CauseOOMKill:
		what = fmt.Sprintf("was killed by %s at its %s ceiling", r.oomWho(), ceiling)
	case r.Cause == CauseHeapOOM:
		what = "ran out of its " + r.heapWords()
	case r.Cause == CauseSignaled && r.Stopped && !r.Forced:
		what = fmt.Sprintf("was stopped by signal %d (%s), as asked", int(r.Status.Signal()), signalName(r.Status.Signal()))
	case r.Cause == CauseSignaled:
		what = fmt.Sprintf("was killed by signal %d (%s)", int(r.Status.Signal()), signalName(r.Status.Signal()))
	default:
		what = fmt.Sprintf("exited %d", r.ExitCode)
	}
	if r.Cause != CauseHeapOOM && r.Heap != nil {
		what += fmt.Sprintf(" after %s (pid %d) ran out of its %s", r.Heap.Runtime, r.Heap.Pid, r.heapWords())
	}
	if r.Cause != CauseOOMKill && r.Stats.OOMKills > 0 {
		what += fmt.Sprintf(" after %s killed %s in its group at its %s ceiling", r.oomWho(), plural(r.Stats.OOMKills, "process", "processes"), ceiling)
	}
	switch r.Reason {
	case "restart_at":
		what += " when guardrun stopped it at the --restart-at threshold"
	case "pressure":
		what += " when guardrun stopped it on memory pressure"
	}
	if r.Forced {
		what += " (its group was killed by guardrun after the stop timeout or a second stop request)"
	}
	return what
}

// heapWords names the heap that ran out and what limited it: "192 MiB
// JavaScript heap: --max-old-space-size, set by guardrun from the 256 MiB
// ceiling".
func (r *Result) heapWords() string {
	w := r.Heap.HeapName()
	if r.Heap.HeapLimit > 0 {
		w = cgroup.FormatSize(r.Heap.HeapLimit) + " " + w
	}
	if r.HeapSetting != "" {
		w += ": " + r.HeapSetting
	}
	return w
}

// oomWho names the killer: the kernel, or guardrun's sampler without a cgroup.
func (r *Result) oomWho() string {
	if r.Backend == "none" {
		return "guardrun (no cgroup: sampled RSS)"
	}
	return "the kernel OOM killer"
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func signalName(s unix.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return "signal " + fmt.Sprint(int(s))
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
