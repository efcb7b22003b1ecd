package supervise

import (
	"context"
	"log/slog"
	"time"

	"github.com/guardrun/guardrun/cgroup"
)

// Kind names a lifecycle step. The words are the contract later consumers
// (notifications, reports, metrics) key on.
type Kind string

const (
	Started          Kind = "started"
	Exited           Kind = "exited"
	OOMKill          Kind = "oom_kill"
	ThresholdCrossed Kind = "threshold_crossed"
	PressureStall    Kind = "pressure"
	PreflightWait    Kind = "preflight_wait"
	PreflightFailed  Kind = "preflight_failed"
	Restarting       Kind = "restarting"
	GaveUp           Kind = "gave_up"
	Stopped          Kind = "stopped"
	// Stopping: guardrun was told to stop (the first TERM or INT) and
	// stops the child; Stopped follows when it is gone.
	Stopping Kind = "stopping"
	// LeakSuspected: the samples show sustained growth (a robust slope
	// over --leak-window, after the start-up ramp); Rate and Left say how
	// fast and how long until the ceiling.
	LeakSuspected Kind = "leak_suspected"
	// Sampled is one sample of the group (Usage, Peak, Ceiling): data for
	// state files, reports, charts and metrics, logged only at debug level.
	Sampled Kind = "sample"
	// HeapOOM: a process of the group died of its runtime's heap limit
	// (V8's "JavaScript heap out of memory", the JVM's OutOfMemoryError
	// under -XX:+ExitOnOutOfMemoryError) before the kernel's ceiling was
	// reached; Diagnosis.Runtime has the runtime's own report.
	HeapOOM Kind = "heap_oom"
	// MemoryRestart: guardrun stops the child to restart it before the
	// ceiling: its working set stayed over --restart-at for the grace, or
	// was about to reach the ceiling before the grace ended, or the
	// --pressure trigger fired under --restart-on-pressure. Reason is
	// restart_at or pressure, Detail the sentence; Diagnosis carries the
	// evidence taken before the stop signal (a Node.js report).
	MemoryRestart Kind = "memory_restart"
	// RestartAsked, StopAsked, SignalAsked: a person asked, through the
	// run's control socket (guardrun restart, stop, signal NAME); By says
	// who, Signal which signal. None is an incident.
	RestartAsked Kind = "restart_asked"
	StopAsked    Kind = "stop_asked"
	SignalAsked  Kind = "signal_asked"
	// RestartScheduled: --restart-every came due and guardrun restarts
	// the child; Uptime is how long it ran. Not an incident.
	RestartScheduled Kind = "restart_scheduled"
)

// Causes: how a child ended (Event.Cause, Result.Cause), or why no child
// ran (Result.Cause).
const (
	CauseExited   = "exited"
	CauseSignaled = "signaled"
	CauseOOMKill  = "oom_kill"
	CauseHeapOOM  = "heap_oom"

	CausePreflightFailed = "preflight_failed" // the host lacked the memory asked for
	CauseStopped         = "stopped"          // guardrun was asked to stop before a child ran
	CauseError           = "error"            // guardrun's own failure (Result.Err)
)

// Reasons guardrun stops a child itself to restart it (Event.Reason,
// Result.Reason).
const (
	ReasonRestartAt = "restart_at" // the working set stayed over --restart-at
	ReasonPressure  = "pressure"   // the --pressure trigger fired under --restart-on-pressure
	ReasonAsked     = "asked"      // a person asked: guardrun restart NAME
	ReasonScheduled = "scheduled"  // --restart-every came due
)

// Event is one lifecycle step of a run, with the figures it carries. Fields
// that do not apply to a kind are zero.
type Event struct {
	Kind     Kind
	Time     time.Time
	Run      string
	Pid      int
	Restarts int    // restarts so far in this run
	Backend  string // started: the group's backend, "v2", "v1" or "none"
	Cgroup   string // started: the group's path, "/sys/fs/cgroup/guardrun/app"; "" for none
	HeapHint string // started: the runtime variables guardrun set, "GOMEMLIMIT=460MiB"

	Cause    string // exited: exited, signaled, oom_kill
	ExitCode int    // exited, gave_up: what guardrun would exit with
	Signal   string // exited by a signal, stopped: its name

	Usage      uint64        // bytes the group was charged for when it happened
	WorkingSet uint64        // of Usage, what the kernel cannot simply reclaim (cgroup.WorkingSet)
	Cache      uint64        // of Usage, page cache (shmem included)
	Ceiling    uint64        // the group's memory ceiling, as the kernel holds it
	Peak       uint64        // exited: the child's peak
	Threshold  uint64        // threshold_crossed: --restart-at in bytes
	Available  uint64        // preflight_*: MemAvailable
	Need       uint64        // preflight_*: what was asked
	Delay      time.Duration // restarting, preflight_wait: before the next try
	Uptime     time.Duration // exited: how long the child ran
	// Reason is why guardrun itself stops the child to restart it
	// (memory_restart, exited, restarting): ReasonRestartAt,
	// ReasonPressure, ReasonAsked or ReasonScheduled; "" otherwise.
	Reason string
	// By is who asked (restart_asked, stop_asked, signal_asked, and the
	// restarting of an asked restart); nil otherwise.
	By   *Peer
	Rate float64       // leak_suspected: growth in bytes per second
	Left time.Duration // leak_suspected: until the ceiling at that rate; 0 without one
	// Detail says why in a sentence: the memory restart's cause, the
	// leak's forecast, the crash loop guardrun gave up on.
	Detail  string
	Trigger string // pressure: the PSI trigger that fired, in the kernel's form
	// Killer names who killed (oom_kill, exited): the kernel's OOM killer,
	// or guardrun's sampler without a cgroup.
	Killer string
	// Forced (exited): guardrun killed the group, at the stop timeout or
	// on a second stop request.
	Forced bool
	// OOMKills (exited) counts the processes the OOM killer killed in the
	// child's group.
	OOMKills uint64
	// Heap (exited) is the runtime's report of a heap death in the group,
	// the child's own or a worker's, and HeapSetting what limited that
	// heap and who set it; nil, "" for none.
	Heap        *RuntimeReport
	HeapSetting string
	// Asked is set on an exited event when the child ended after guardrun
	// was asked to stop it (TERM, INT: systemctl stop, docker stop): a
	// stop that was asked for is never an incident.
	Asked bool
	// Victim is the process the kernel's OOM killer killed (oom_kill), as
	// the kernel's "Killed process" line names it, or the main child when
	// it died of the kill; nil when nothing tells which process it was
	// (no /dev/kmsg, or the kernel's summary rate-limited and the process
	// one no sample saw).
	Victim *cgroup.Proc
	// HeapSizing says how the heap hint was sized (started), e.g. "75% of
	// the 256 MiB ceiling".
	HeapSizing string

	Diagnosis *Diagnosis // incidents, when sampling is on
}

// attrs are the event's non-zero fields as slog attributes, in one order.
func (e Event) attrs() []any {
	a := []any{"run", e.Run}
	add := func(k string, v any, set bool) {
		if set {
			a = append(a, k, v)
		}
	}
	add("pid", e.Pid, e.Pid != 0)
	add("backend", e.Backend, e.Backend != "")
	add("cgroup", e.Cgroup, e.Cgroup != "")
	add("heap_hint", e.HeapHint, e.HeapHint != "")
	add("cause", e.Cause, e.Cause != "")
	add("code", e.ExitCode, e.Kind == Exited || e.Kind == GaveUp || e.Kind == Stopped)
	add("signal", e.Signal, e.Signal != "")
	add("usage", e.Usage, e.Usage != 0)
	add("working_set", e.WorkingSet, e.WorkingSet != 0)
	add("cache", e.Cache, e.Cache != 0)
	add("ceiling", e.Ceiling, e.Ceiling != 0)
	add("peak", e.Peak, e.Peak != 0)
	add("threshold", e.Threshold, e.Threshold != 0)
	add("available", e.Available, e.Available != 0)
	add("need", e.Need, e.Need != 0)
	add("delay", e.Delay, e.Kind == Restarting || e.Kind == PreflightWait)
	add("uptime", e.Uptime.Round(time.Millisecond), e.Uptime != 0)
	add("restarts", e.Restarts, e.Restarts != 0)
	add("reason", e.Reason, e.Reason != "")
	add("rate_bytes_per_min", int64(e.Rate*60), e.Rate != 0)
	add("left", e.Left.Round(time.Second), e.Left != 0)
	add("detail", e.Detail, e.Detail != "")
	add("trigger", e.Trigger, e.Trigger != "")
	add("killer", e.Killer, e.Killer != "" && e.Kind == OOMKill)
	add("forced", e.Forced, e.Forced)
	add("oom_kills", e.OOMKills, e.OOMKills != 0 && e.Kind == Exited)
	add("asked", e.Asked, e.Asked)
	if e.Victim != nil {
		add("victim_pid", e.Victim.Pid, true)
		add("victim", e.Victim.Command, true)
	}
	add("heap_sizing", e.HeapSizing, e.HeapSizing != "")
	if e.By != nil {
		add("by", e.By.String(), true)
	}
	return a
}

// level is how loud an event is in the log. None is an error: errors are
// guardrun's own failures, and -q keeps only those and the summary line,
// which already says what an oom_kill or gave_up event says.
func (e Event) level() slog.Level {
	switch e.Kind {
	case Sampled:
		return slog.LevelDebug
	case Started, Exited, Stopped, Stopping, RestartAsked, StopAsked, SignalAsked, RestartScheduled:
		return slog.LevelInfo
	case Restarting:
		if e.Reason == ReasonAsked || e.Reason == ReasonScheduled {
			return slog.LevelInfo // asked for: nothing went wrong
		}
	}
	return slog.LevelWarn
}

// emitter stamps events, logs each as one structured line and hands it to
// each observer, in order. Nothing reaches back into the supervisor.
type emitter struct {
	run string
	log *slog.Logger
	obs []Observer
	now func() time.Time
}

func (em *emitter) emit(e Event) {
	e.Run = em.run
	if e.Time.IsZero() {
		e.Time = em.now()
	}
	if l := e.level(); em.log.Enabled(context.Background(), l) {
		em.log.Log(context.Background(), l, string(e.Kind), e.attrs()...)
	}
	for _, o := range em.obs {
		o.Observe(e)
	}
}
