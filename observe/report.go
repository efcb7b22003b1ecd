package observe

import (
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
	"golang.org/x/sys/unix"
)

// ReportSchema names the report's JSON layout; a change that breaks a
// reader gets a new version.
const ReportSchema = "guardrun.report/v1"

// Report is a whole run, as --report writes it and --chart draws it.
type Report struct {
	Schema  string   `json:"schema"`
	Run     string   `json:"run"`
	Host    string   `json:"host"`
	Command []string `json:"command"`
	Backend string   `json:"backend,omitempty"` // v2, v1, none
	Cgroup  string   `json:"cgroup,omitempty"`  // the last child's group

	Ceiling   uint64 `json:"ceiling,omitempty"`    // --max in bytes; 0: none
	RestartAt uint64 `json:"restart_at,omitempty"` // --restart-at in bytes; 0: none

	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`

	Peak uint64 `json:"peak"` // the highest usage of any child
	// PeakWorkingSet is the highest working set of any child, as sampled
	// or as an event carried it; 0 when none was known.
	PeakWorkingSet uint64 `json:"peak_working_set,omitempty"`
	Restarts       int    `json:"restarts"`
	Exit           *Exit  `json:"exit,omitempty"` // how the run ended; nil while it runs
	// PendingNotifications counts the critical notifications not
	// delivered when the report was written, kept in the state directory
	// for the next run of the name (State.PendingNotifications).
	PendingNotifications int `json:"pending_notifications"`

	// SampleEvery is the sampling interval; Samples are the group's usage
	// and working set over the run. A long run keeps at most maxSamples:
	// when full, each two neighbours are folded into the higher one, so
	// peaks survive and SampleEvery doubles.
	SampleEvery Duration `json:"sample_every,omitempty"`
	Samples     []Point  `json:"samples"`
	// Events are the lifecycle steps, oldest first (samples excluded).
	// Past maxMarks the middle of a long run goes: EventsDropped says
	// how many.
	Events        []Mark `json:"events"`
	EventsDropped int    `json:"events_dropped,omitempty"`
}

// Exit is how a run ended.
type Exit struct {
	// Cause: exited, signaled, oom_kill, heap_oom (the runtime's heap
	// limit ended it), preflight_failed, stopped or error.
	Cause  string `json:"cause"`
	Code   int    `json:"code"` // guardrun's exit status
	Signal string `json:"signal,omitempty"`
	Reason string `json:"reason,omitempty"`  // why guardrun stopped the child itself
	GaveUp string `json:"gave_up,omitempty"` // why guardrun stopped restarting
	// Message is the one-line summary guardrun printed.
	Message string `json:"message"`
}

// ExitOf is how a run ended, for its report.
func ExitOf(r *supervise.Result) *Exit {
	x := &Exit{Cause: r.Cause, Code: r.ExitCode, Reason: r.Reason, GaveUp: r.GaveUp, Message: r.Summary()}
	if r.Status.Signaled() && r.Pid != 0 {
		x.Signal = unix.SignalName(r.Status.Signal())
	}
	return x
}

// Point is the group's usage and working set at one time. A report from
// before working sets were kept has none (0), and the chart draws usage
// alone.
type Point struct {
	T          time.Time `json:"t"`
	Usage      uint64    `json:"usage"`
	WorkingSet uint64    `json:"working_set"`
}

// Mark is one lifecycle event of the run: what the chart marks and the
// report lists.
type Mark struct {
	T     time.Time `json:"t"`
	Kind  string    `json:"kind"` // supervise.Kind: started, exited, oom_kill, restarting, threshold_crossed, leak_suspected, ...
	Pid   int       `json:"pid,omitempty"`
	Usage uint64    `json:"usage,omitempty"`
	// WorkingSet is the event's working set, where it carried one.
	WorkingSet uint64 `json:"working_set,omitempty"`
	Cause      string `json:"cause,omitempty"`
	Code       *int   `json:"code,omitempty"`
	Signal     string `json:"signal,omitempty"`
	Restarts   int    `json:"restarts,omitempty"`
	// Victim is the process the kernel's OOM killer killed (oom_kill).
	Victim *cgroup.Proc `json:"victim,omitempty"`
	// Runtime and HeapLimit are a heap_oom's runtime (node, jvm) and its
	// heap limit in bytes, from the runtime's report.
	Runtime   string `json:"runtime,omitempty"`
	HeapLimit uint64 `json:"heap_limit,omitempty"`
	Message   string `json:"message,omitempty"` // one human sentence
}

// Duration is a time.Duration that reads and writes as "1s".
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}
