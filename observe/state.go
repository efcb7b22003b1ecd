package observe

import "time"

// StateSchema names the state file's JSON layout.
const StateSchema = "guardrun.state/v1"

// Phases of a run, as a state file and `guardrun status` say them.
const (
	PhaseStarting = "starting" // preflight, creating the group
	PhaseRunning  = "running"
	PhaseStopping = "stopping"
	PhaseBackoff  = "backoff"        // waiting to restart
	PhaseWaiting  = "preflight_wait" // waiting for memory
	PhaseEnded    = "ended"
	// PhaseGaveUp is how a run that gave up on a crash loop ends, and
	// stays: the last state a textfile collector keeps says it.
	PhaseGaveUp = "gave_up"
)

// State is one run as it stands: the state file's content, what
// `guardrun status` shows and what metrics export.
type State struct {
	Schema string `json:"schema"`
	Run    string `json:"run"`
	// Guardrun is the supervisor's pid and GuardrunStart its start time
	// in clock ticks since boot (/proc/PID/stat field 22): together they
	// tell a live run from a dead one whose pid was reused.
	Guardrun      int      `json:"guardrun_pid"`
	GuardrunStart uint64   `json:"guardrun_start"`
	Command       []string `json:"command"`
	Backend       string   `json:"backend,omitempty"`
	Cgroup        string   `json:"cgroup,omitempty"` // the current child's group directory
	Pid           int      `json:"pid,omitempty"`    // the current child; 0 between children
	Phase         string   `json:"phase"`

	Ceiling   uint64 `json:"ceiling,omitempty"`
	RestartAt uint64 `json:"restart_at,omitempty"`
	Current   uint64 `json:"current"` // usage at the last sample or event, page cache included
	// WorkingSet is the part of Current the kernel cannot simply reclaim
	// (cgroup.WorkingSet), and Cache the page cache (shmem included), at
	// the same time. A state file from before they were kept has 0.
	WorkingSet uint64 `json:"working_set"`
	Cache      uint64 `json:"cache"`
	Peak       uint64 `json:"peak"` // of the whole run

	Restarts int `json:"restarts"`
	// OOMKills counts the kernel's kills in the run's groups, one per
	// oom_kill event: a worker's as well as the main child's.
	OOMKills int `json:"oom_kills"`
	// HeapOOMs counts deaths of a runtime's heap limit (heap_oom).
	HeapOOMs int `json:"heap_ooms"`
	// MemoryRestarts counts the restarts guardrun made before the
	// ceiling (memory_restart: --restart-at, --restart-on-pressure).
	MemoryRestarts int     `json:"memory_restarts"`
	Crossings      int     `json:"threshold_crossings"`
	PressureStalls int     `json:"pressure_stalls"`
	LeakRate       float64 `json:"leak_rate,omitempty"` // bytes/s while a leak is suspected
	// PendingNotifications counts the critical notifications kept in the
	// state directory because they are not delivered yet (notify.KeptDir),
	// this run's and those an earlier run of the name left.
	PendingNotifications int `json:"pending_notifications"`

	// LastRestart is how the child was last restarted and by what; nil
	// before the first restart.
	LastRestart *Restart `json:"last_restart,omitempty"`

	Started      time.Time `json:"started"`                // the run
	ChildStarted time.Time `json:"child_started,omitzero"` // the current child
	Updated      time.Time `json:"updated"`
	// Last are the latest events, newest last (at most lastEvents).
	Last []Mark `json:"last,omitempty"`
}

// Restart is one restart of a run's child, as status shows the last.
type Restart struct {
	T time.Time `json:"t"`
	// Why is supervise.RestartWhy: restart_at, pressure, asked,
	// scheduled, oom_kill, heap_oom, crash, exited.
	Why string `json:"why"`
	// By is who asked, for an asked restart: "uid 1000 pid 4242
	// (guardrun)", and ByUid their uid.
	By    string  `json:"by,omitempty"`
	ByUid *uint32 `json:"by_uid,omitempty"`
	// Pid is the child that was restarted (0 when none ran: a restart
	// asked during a backoff), ExitCode what it ended with.
	Pid      int    `json:"pid,omitempty"`
	ExitCode int    `json:"exit_code"`
	Message  string `json:"message"` // in words: "asked by uid 1000 pid 4242 (guardrun)"
}
