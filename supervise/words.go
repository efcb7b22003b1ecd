package supervise

import (
	"fmt"
	"strings"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"golang.org/x/sys/unix"
)

// This file puts events into words, the one place that does: the summary
// line, the notifications, the report's and status's events and systemd's
// STATUS= all say an event with its Sentence.

// Sentence is the event in one sentence a person reads, naming the run:
// "api was killed by the kernel OOM killer at its 512 MiB ceiling (peak
// 512 MiB, ran 4.2s)".
func (e Event) Sentence() string {
	size := cgroup.FormatSize
	switch e.Kind {
	case Started:
		s := fmt.Sprintf("%s started (pid %d", e.Run, e.Pid)
		if e.Ceiling > 0 {
			s += ", ceiling " + size(e.Ceiling)
		}
		if e.Restarts > 0 {
			s += ", " + Plural(uint64(e.Restarts), "restart", "restarts") + " before it"
		}
		return s + ")"
	case Exited:
		return exitedSentence(e, 0, "")
	case OOMKill:
		return oomSentence(e)
	case HeapOOM:
		return heapSentence(e)
	case MemoryRestart:
		why := e.Detail
		if why == "" {
			why = restartWhy(e.Reason)
		}
		return fmt.Sprintf("guardrun restarted %s before its ceiling: %s", e.Run, why)
	case ThresholdCrossed:
		at := e.WorkingSet // what --restart-at is held against
		if at == 0 {
			at = e.Usage
		}
		return fmt.Sprintf("%s crossed --restart-at %s at %s", e.Run, size(e.Threshold), size(at))
	case PressureStall:
		return fmt.Sprintf("%s is stalled on memory (PSI trigger %q): %s", e.Run, e.Trigger, strings.Join(Figures(e.WorkingSet, e.Usage, e.Cache, e.Ceiling, 0), ", "))
	case LeakSuspected:
		// The forecast reads the working set (page cache the kernel can
		// drop is not a leak); usage stands in where there is none.
		now := e.WorkingSet
		if now == 0 {
			now = e.Usage
		}
		return fmt.Sprintf("%s looks like it leaks memory: %s (now %s)", e.Run, e.Detail, size(now))
	case Restarting:
		switch {
		case e.Reason == ReasonAsked && e.By != nil:
			return fmt.Sprintf("%s restarting now, as asked by %s", e.Run, e.By)
		case e.Reason == ReasonAsked:
			return e.Run + " restarting now, as asked"
		case e.Reason == ReasonScheduled:
			return e.Run + " restarting now, on its --restart-every schedule"
		}
		return fmt.Sprintf("%s restarting in %s", e.Run, e.Delay.Round(time.Millisecond))
	case RestartAsked:
		if e.Pid == 0 {
			return fmt.Sprintf("%s is to start at once, as asked by %s", e.Run, e.By)
		}
		return fmt.Sprintf("%s is restarting (pid %d), as asked by %s", e.Run, e.Pid, e.By)
	case StopAsked:
		return fmt.Sprintf("%s is stopping, as asked by %s", e.Run, e.By)
	case SignalAsked:
		return fmt.Sprintf("%s (pid %d) was sent %s, as asked by %s", e.Run, e.Pid, e.Signal, e.By)
	case RestartScheduled:
		return fmt.Sprintf("%s is restarting (pid %d) on its schedule: %s", e.Run, e.Pid, e.Detail)
	case GaveUp:
		return "guardrun " + gaveUp(e)
	case PreflightWait:
		return fmt.Sprintf("%s is waiting for memory: %s available, %s needed", e.Run, size(e.Available), size(e.Need))
	case PreflightFailed:
		return fmt.Sprintf("%s was not started: %s available, %s needed", e.Run, size(e.Available), size(e.Need))
	case Stopping:
		return e.Run + " is stopping, as asked"
	case Stopped:
		return e.Run + " stopped, as asked"
	case Sampled:
		return fmt.Sprintf("%s: %s", e.Run, strings.Join(Figures(e.WorkingSet, e.Usage, e.Cache, e.Ceiling, e.Peak), ", "))
	}
	return fmt.Sprintf("%s: %s", e.Run, e.Kind)
}

// Summary is the one line a person reads at the end of a run: the last
// child's end, as its exited event says it, and the whole run's figures.
func (r *Result) Summary() string {
	switch r.Cause {
	case CauseStopped:
		return r.Name + ": stopped while waiting for memory; nothing was started"
	case CausePreflightFailed, CauseError:
		if r.Err == nil {
			return r.Name + ": guardrun failed"
		}
		return r.Name + ": " + r.Err.Error()
	}
	if r.Stopped && !r.Asked && r.Pid != 0 {
		// Stopped in a backoff or a preflight wait: the run's end is the
		// stop; the last child's is what came before it.
		last := r.exited()
		last.ExitCode = r.Status.ExitStatus() // the child's, not the run's end
		if r.Status.Signaled() {
			last.ExitCode = exitSignalsBase + int(r.Status.Signal())
		}
		return fmt.Sprintf("%s: stopped while waiting to restart, as asked; before it, %s", r.Name, exitedSentence(last, r.Restarts, ""))
	}
	if r.GaveUp != "" {
		// Its line begins "guardrun: ", which says who gave up.
		return gaveUp(Event{Kind: GaveUp, Run: r.Name, Detail: r.GaveUp})
	}
	whole := ""
	if t := r.Run; t.Children > 1 {
		w := []string{"peak " + cgroup.FormatSize(t.Peak)}
		if t.OOMKills > 0 {
			w = append(w, Plural(t.OOMKills, "OOM kill", "OOM kills"))
		}
		if t.HeapOOMs > 0 {
			w = append(w, Plural(uint64(t.HeapOOMs), "heap OOM", "heap OOMs"))
		}
		whole = "the whole run: " + strings.Join(w, ", ")
	}
	return exitedSentence(r.exited(), r.Restarts, whole)
}

// exitedSentence is the exited event's sentence. A summary adds, inside
// its parentheses, the restarts before this child and, after them, whole
// (the run's figures): "api exited 1 (peak 20 MiB of 64 MiB, ran 1s,
// 2 restarts before it; the whole run: ...)".
func exitedSentence(e Event, before int, whole string) string {
	var fig []string
	if e.Peak > 0 {
		peak := "peak " + cgroup.FormatSize(e.Peak)
		if e.Cause != CauseOOMKill && e.Ceiling > 0 {
			peak += " of " + cgroup.FormatSize(e.Ceiling)
		}
		fig = append(fig, peak)
	}
	if e.Uptime > 0 {
		fig = append(fig, "ran "+fmtDuration(e.Uptime))
	}
	if before > 0 {
		fig = append(fig, Plural(uint64(before), "restart", "restarts")+" before it")
	}
	inside := strings.Join(fig, ", ")
	switch {
	case inside == "":
		inside = whole
	case whole != "":
		inside += "; " + whole
	}
	if inside == "" {
		return e.Run + " " + ended(e)
	}
	return fmt.Sprintf("%s %s (%s)", e.Run, ended(e), inside)
}

// gaveUp says a crash loop guardrun gave up on, without the subject.
func gaveUp(e Event) string {
	return fmt.Sprintf("gave up on %s, a crash loop: %s", e.Run, e.Detail)
}

// ended says how a child ended, in words: "exited 3", "was killed by ...".
func ended(e Event) string {
	ceiling := cgroup.FormatSize(e.Ceiling)
	killer := e.Killer
	if killer == "" {
		killer = "the kernel OOM killer"
	}
	sig := unix.SignalNum(e.Signal)
	cause := e.Cause
	if cause == "" && e.Signal != "" {
		cause = CauseSignaled
	}
	var what string
	switch {
	case cause == CauseOOMKill:
		what = fmt.Sprintf("was killed by %s at its %s ceiling", killer, ceiling)
	case cause == CauseHeapOOM:
		what = "ran out of its " + heapWords(e.Heap, e.HeapSetting)
	case cause == CauseSignaled && e.Asked && !e.Forced:
		what = fmt.Sprintf("was stopped by signal %d (%s), as asked", int(sig), e.Signal)
	case cause == CauseSignaled && (e.Reason == ReasonAsked || e.Reason == ReasonScheduled) && !e.Forced:
		what = fmt.Sprintf("was stopped by signal %d (%s)", int(sig), e.Signal) // the reason says who stopped it
	case cause == CauseSignaled:
		what = fmt.Sprintf("was killed by signal %d (%s)", int(sig), e.Signal)
	default:
		what = fmt.Sprintf("exited %d", e.ExitCode)
	}
	if cause != CauseHeapOOM && e.Heap != nil {
		what += fmt.Sprintf(" after %s (pid %d) ran out of its %s", e.Heap.Runtime, e.Heap.Pid, heapWords(e.Heap, e.HeapSetting))
	}
	if cause != CauseOOMKill && e.OOMKills > 0 {
		what += fmt.Sprintf(" after %s killed %s in its group at its %s ceiling", killer, Plural(e.OOMKills, "process", "processes"), ceiling)
	}
	switch e.Reason {
	case ReasonRestartAt:
		what += " when guardrun stopped it at the --restart-at threshold"
	case ReasonPressure:
		what += " when guardrun stopped it on memory pressure"
	case ReasonAsked:
		what += " when guardrun restarted it, as asked"
	case ReasonScheduled:
		what += " when guardrun restarted it on its --restart-every schedule"
	}
	if e.Forced {
		what += " (its group was killed by guardrun after the stop timeout or a second stop request)"
	}
	return what
}

// heapWords names the heap that ran out and what limited it: "192 MiB
// JavaScript heap: --max-old-space-size, set by guardrun from the 256 MiB
// ceiling".
func heapWords(rt *RuntimeReport, setting string) string {
	if rt == nil {
		rt = &RuntimeReport{}
	}
	w := rt.HeapName()
	if rt.HeapLimit > 0 {
		w = cgroup.FormatSize(rt.HeapLimit) + " " + w
	}
	if setting != "" {
		w += ": " + setting
	}
	return w
}

// oomSentence says who the kernel killed. Since the kernel tells each kill
// while the child lives, the victim may be a worker of a service that
// goes on (Event.Pid is the main child): that is news of its own, and
// "was killed" would say the service died when it did not. A victim no
// one named is said as such.
func oomSentence(e Event) string {
	killer := e.Killer
	if killer == "" {
		killer = "the kernel OOM killer"
	}
	if v := e.Victim; v != nil && e.Pid != 0 && v.Pid != e.Pid {
		who := fmt.Sprintf("worker pid %d", v.Pid)
		if v.Command != "" {
			who += " (" + v.Command + ")"
		}
		at := ""
		if e.Ceiling > 0 {
			at = " at the " + cgroup.FormatSize(e.Ceiling) + " ceiling"
		}
		return fmt.Sprintf("%s: %s killed %s%s; the service runs on", e.Run, killer, who, at)
	}
	if e.Victim == nil {
		// Which process is not known: "api was killed" would be a
		// guess, and wrong for a worker of a service that runs on.
		return fmt.Sprintf("%s: %s killed a process in its group at its %s ceiling (peak %s); the kernel's log did not name it", e.Run, killer, cgroup.FormatSize(e.Ceiling), cgroup.FormatSize(e.Peak))
	}
	return fmt.Sprintf("%s was killed by %s at its %s ceiling (peak %s)", e.Run, killer, cgroup.FormatSize(e.Ceiling), cgroup.FormatSize(e.Peak))
}

// heapSentence names the runtime, its heap limit and where it was when the
// heap ran out: "api ran out of its 192 MiB JavaScript heap (node, pid
// 4242) at processRequest (/srv/app.js:12:5)". What the runtime did not
// report is left out.
func heapSentence(e Event) string {
	var rt RuntimeReport
	if e.Diagnosis != nil && e.Diagnosis.Runtime != nil {
		rt = *e.Diagnosis.Runtime
	}
	heap := rt.HeapName()
	if rt.HeapLimit > 0 {
		heap = cgroup.FormatSize(rt.HeapLimit) + " " + heap
	}
	if rt.Runtime == "" {
		heap = "runtime's " + heap
	}
	pid := rt.Pid
	if pid == 0 {
		pid = e.Pid
	}
	var who []string
	if rt.Runtime != "" {
		who = append(who, rt.Runtime)
	}
	if pid != 0 {
		who = append(who, fmt.Sprintf("pid %d", pid))
	}
	s := fmt.Sprintf("%s ran out of its %s", e.Run, heap)
	if len(who) > 0 {
		s += " (" + strings.Join(who, ", ") + ")"
	}
	if f := rt.TopFrame(); f != "" {
		s += " at " + f
	}
	if rt.Pid != 0 && e.Pid != 0 && rt.Pid != e.Pid {
		s += "; the service runs on" // a worker died, as oomSentence says of one
	}
	return s
}

// TopFrame is the innermost frame of the runtime's stack, without V8's
// "at "; "" without a stack.
func (rt *RuntimeReport) TopFrame() string {
	for _, f := range rt.Stack {
		if f = strings.TrimPrefix(strings.TrimSpace(f), "at "); f != "" {
			return f
		}
	}
	return ""
}

// String is who asked, as logs and status say it: "uid 1000 pid 4242
// (guardrun)".
func (p *Peer) String() string {
	if p == nil {
		return "someone"
	}
	s := fmt.Sprintf("uid %d pid %d", p.Uid, p.Pid)
	if p.Command != "" {
		s += " (" + p.Command + ")"
	}
	return s
}

// Sentence is the reply in one sentence, for the person who asked:
// "restarted api (pid 123 -> 456)".
func (r Reply) Sentence() string {
	switch {
	case r.Err != nil && r.Pid != 0:
		return fmt.Sprintf("cannot %s %s (pid %d): %v", r.Action, r.Run, r.Pid, r.Err)
	case r.Err != nil:
		return fmt.Sprintf("cannot %s %s: %v", r.Action, r.Run, r.Err)
	}
	switch r.Action {
	case ActionRestart:
		switch {
		case r.NewPid != 0 && r.Pid != 0:
			return fmt.Sprintf("restarted %s (pid %d -> %d)", r.Run, r.Pid, r.NewPid)
		case r.NewPid != 0:
			return fmt.Sprintf("started %s (pid %d) at once, its backoff cut short", r.Run, r.NewPid)
		case r.Pid != 0:
			return fmt.Sprintf("restarting %s (pid %d): the stop signal is sent", r.Run, r.Pid)
		}
		return fmt.Sprintf("restarting %s: no child runs, one starts at once", r.Run)
	case ActionStop:
		if r.Done {
			return fmt.Sprintf("stopped %s (guardrun exits %d)", r.Run, r.ExitCode)
		}
		if r.Pid != 0 {
			return fmt.Sprintf("stopping %s (pid %d): the stop signal is sent", r.Run, r.Pid)
		}
		return fmt.Sprintf("stopping %s: no child runs", r.Run)
	case ActionSignal:
		return fmt.Sprintf("sent %s to %s (pid %d)", signalName(r.Signal), r.Run, r.Pid)
	}
	return fmt.Sprintf("%s: %s", r.Run, r.Action)
}

// RestartWhy names what made a restart, for status: the Reason guardrun
// stopped the child for (restart_at, pressure, asked, scheduled), else how
// it ended (oom_kill, heap_oom, crash for a failure, exited for exit 0
// under --restart always).
func RestartWhy(e Event) string {
	switch {
	case e.Reason != "":
		return e.Reason
	case e.Cause == CauseOOMKill || e.Cause == CauseHeapOOM:
		return e.Cause
	case e.Cause == CauseExited && e.ExitCode == 0:
		return "exited"
	}
	return "crash"
}

// RestartWords says a restart's why (RestartWhy) and by whom in a
// phrase: "asked by uid 1000 pid 4242 (guardrun)", "the --restart-every
// schedule", "an OOM kill".
func RestartWords(why, by string) string {
	switch why {
	case ReasonAsked:
		if by == "" {
			return "asked"
		}
		return "asked by " + by
	case ReasonScheduled:
		return "the --restart-every schedule"
	case ReasonRestartAt:
		return "--restart-at, before the ceiling"
	case ReasonPressure:
		return "memory pressure (--restart-on-pressure)"
	case CauseOOMKill:
		return "an OOM kill"
	case CauseHeapOOM:
		return "a heap OOM"
	case "exited":
		return "a clean exit (--restart always)"
	case "crash":
		return "a crash"
	}
	return why
}

// restartWhy stands in for a memory_restart's Detail, should it be empty.
func restartWhy(reason string) string {
	switch reason {
	case ReasonRestartAt:
		return "its working set stayed over --restart-at"
	case ReasonPressure:
		return "the --pressure trigger fired"
	}
	return reason
}

// Figures are the memory figures a person asks for next, each when known:
// "working set 180 MiB", "usage 500 MiB", "page cache 320 MiB",
// "ceiling 512 MiB", "peak 512 MiB". The working set is what the kernel
// cannot reclaim before it kills; usage counts page cache it can. Without
// a cgroup the two are one figure (RSS), said once.
func Figures(ws, usage, cache, ceiling, peak uint64) []string {
	size := cgroup.FormatSize
	var f []string
	if ws > 0 && (ws != usage || cache > 0) {
		f = append(f, "working set "+size(ws))
	}
	if usage > 0 {
		f = append(f, "usage "+size(usage))
	}
	if cache > 0 {
		f = append(f, "page cache "+size(cache))
	}
	if ceiling > 0 {
		f = append(f, "ceiling "+size(ceiling))
	}
	if peak > 0 {
		f = append(f, "peak "+size(peak))
	}
	return f
}

// HeapFigures is a runtime's heap in a phrase: "heap 190 MiB used of
// 192 MiB (node, pid 4242)".
func HeapFigures(rt *RuntimeReport) string {
	size := cgroup.FormatSize
	s := rt.HeapName()
	switch {
	case rt.HeapUsed > 0 && rt.HeapLimit > 0:
		s += fmt.Sprintf(" %s used of %s", size(rt.HeapUsed), size(rt.HeapLimit))
	case rt.HeapLimit > 0:
		s += " limit " + size(rt.HeapLimit)
	case rt.HeapUsed > 0:
		s += " " + size(rt.HeapUsed) + " used"
	}
	if rt.Runtime != "" && rt.Pid != 0 {
		s += fmt.Sprintf(" (%s, pid %d)", rt.Runtime, rt.Pid)
	}
	return s
}

// Plural is "1 restart", "3 restarts".
func Plural(n uint64, one, many string) string {
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
