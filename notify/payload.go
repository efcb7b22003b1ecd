// Package notify turns supervision events into notifications a person can
// act on: one per incident, repeats folded into a count, a summary when the
// window closes, a resolved notice when the incident is over, each carrying
// the diagnosis (memory breakdown, largest processes, growth, the kernel's
// OOM line, the runtime's own report of a heap OOM). It delivers them
// asynchronously to sinks (HTTP JSON, Slack, Alertmanager, a command) so
// that a slow or dead sink never holds up supervision.
//
// It takes supervise.Event values and nothing else; it never reaches back
// into the supervisor.
package notify

import (
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
)

// Schema names the JSON payload's version. A change that removes or
// renames a field gets a new one; fields are added under the same one
// (working_set, cache and victim were).
const Schema = "guardrun.notification/v1"

// Notification is the payload every sink gets (docs/NOTIFICATIONS.md).
type Notification struct {
	Schema    string    `json:"schema"`
	Host      string    `json:"host"`
	Run       string    `json:"run"`
	Command   []string  `json:"command,omitempty"`
	Kind      string    `json:"kind"`   // the event kind: oom_kill, gave_up, ...
	Status    string    `json:"status"` // firing or resolved
	Severity  string    `json:"severity"`
	Count     int       `json:"count"` // events this notification stands for
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Message   string    `json:"message"`
	Ceiling   uint64    `json:"ceiling,omitempty"`
	Peak      uint64    `json:"peak,omitempty"`
	Usage     uint64    `json:"usage,omitempty"` // all the group was charged for, page cache included
	// WorkingSet is the part of Usage the kernel cannot simply reclaim
	// (usage less page cache that is not shmem): what reaches the ceiling.
	WorkingSet uint64 `json:"working_set,omitempty"`
	Cache      uint64 `json:"cache,omitempty"` // page cache, shmem included
	Restarts   int    `json:"restarts"`
	ExitCode   *int   `json:"exit_code,omitempty"`
	Signal     string `json:"signal,omitempty"`
	// Victim is the process the kernel's OOM killer killed (oom_kill),
	// when its line was readable: the main child or one of its workers.
	Victim *cgroup.Proc `json:"victim,omitempty"`

	Diagnosis *supervise.Diagnosis `json:"diagnosis,omitempty"`
}

// Statuses.
const (
	Firing   = "firing"
	Resolved = "resolved"
)

// Severities, as Alertmanager and most pagers take them.
const (
	Critical = "critical"
	Warning  = "warning"
	Info     = "info"
)
