package notify

import (
	"fmt"
	"sort"
	"time"

	"github.com/guardrun/guardrun/supervise"
)

// Dedup is the contract of docs/NOTIFICATIONS.md, as a pure state machine:
// events and the time go in, notifications come out. It keeps no clock of
// its own, so tests drive it with any time they like.
//
//   - An incident's key is run + event kind + host. Its first event is sent
//     at once and opens a window of Window.
//   - Repeats inside the window are folded into a count. When the window
//     closes with folded repeats, one summary carries their count and a new
//     window opens; so K events in one window make at most 2 notifications
//     whose counts sum to K.
//   - A window that closes with no repeat, while the run's child is up,
//     resolves the incident: one resolved notification.
//   - gave_up and preflight_failed are sent every time: each ends a run.
//   - Kinds are never folded into each other.
type Dedup struct {
	Window  time.Duration
	Host    string
	Command []string

	open    map[key]*incident
	running map[string]bool // run name -> its child is up
}

type key struct{ run, kind string }

type incident struct {
	opened    time.Time // when the current window opened
	folded    int       // repeats in this window, not yet sent
	foldFirst time.Time
	foldLast  time.Time
	last      supervise.Event // the latest event, for figures and diagnosis
	firstEver time.Time
}

// notified says which kinds are incidents. started, restarting, stopped and
// preflight_wait are steps of one, not news of their own. A
// threshold_crossed is not one either: a crossing that passes is a spike
// guardrun does not act on, and one that holds becomes a memory_restart,
// which is. An exit is news only when the child failed on its own: a stop
// that was asked for (TERM to guardrun, systemctl stop, docker stop) is
// never an incident, under any restart policy; an exit guardrun caused
// (Reason: restart_at, pressure) has its memory_restart; and a death by
// heap or kernel OOM has its heap_oom or oom_kill event.
func notified(e supervise.Event) bool {
	switch e.Kind {
	case supervise.OOMKill, supervise.HeapOOM, supervise.MemoryRestart, supervise.GaveUp, supervise.PreflightFailed, supervise.PressureStall, supervise.LeakSuspected:
		return true
	case supervise.Exited:
		return e.ExitCode != 0 && !e.Asked && e.Reason == "" &&
			e.Cause != supervise.CauseOOMKill && e.Cause != supervise.CauseHeapOOM
	}
	return false
}

func alwaysSent(k supervise.Kind) bool {
	return k == supervise.GaveUp || k == supervise.PreflightFailed
}

// Observe takes one event at now and returns what to send now, oldest first.
func (d *Dedup) Observe(e supervise.Event, now time.Time) []Notification {
	if d.open == nil {
		d.open, d.running = map[key]*incident{}, map[string]bool{}
	}
	out := d.Tick(now)
	switch e.Kind {
	case supervise.Started:
		d.running[e.Run] = true
	case supervise.Exited, supervise.GaveUp, supervise.Stopped:
		d.running[e.Run] = false
	}
	if !notified(e) {
		return out
	}
	k := key{e.Run, string(e.Kind)}
	if alwaysSent(e.Kind) {
		return append(out, d.notification(e, Firing, 1, now, now))
	}
	if inc := d.open[k]; inc != nil {
		inc.last = e
		if inc.folded == 0 {
			inc.foldFirst = now
		}
		inc.folded++
		inc.foldLast = now
		return out
	}
	d.open[k] = &incident{opened: now, last: e, firstEver: now}
	return append(out, d.notification(e, Firing, 1, now, now))
}

// Tick closes the windows that ended by now and returns their summaries
// and resolutions.
func (d *Dedup) Tick(now time.Time) []Notification {
	var out []Notification
	for _, k := range d.keys() {
		inc := d.open[k]
		for now.Sub(inc.opened) >= d.Window {
			end := inc.opened.Add(d.Window)
			if inc.folded > 0 {
				out = append(out, d.summary(inc, inc.foldFirst, inc.foldLast))
				inc.folded = 0
				inc.opened = end
				continue
			}
			if d.running[k.run] {
				out = append(out, d.notification(inc.last, Resolved, 0, inc.firstEver, end))
				delete(d.open, k)
				break
			}
			// Quiet but down: the incident stays open and its windows go
			// on, so a repeat after a long gap (a late Tick, a suspended
			// host) folds into the window of its own time, not a stale
			// one that would close at once (found by FuzzDedupInvariants).
			inc.opened = end
		}
	}
	return out
}

// Flush sends what is folded, as at the close of every window, when
// guardrun exits: no event goes unreported.
func (d *Dedup) Flush() []Notification {
	var out []Notification
	for _, k := range d.keys() {
		if inc := d.open[k]; inc.folded > 0 {
			out = append(out, d.summary(inc, inc.foldFirst, inc.foldLast))
			inc.folded = 0
		}
	}
	return out
}

// Next is when Tick next has work, or the zero time.
func (d *Dedup) Next() time.Time {
	var next time.Time
	for _, inc := range d.open {
		if t := inc.opened.Add(d.Window); next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next
}

// keys in a stable order, so notifications come out the same every time.
func (d *Dedup) keys() []key {
	ks := make([]key, 0, len(d.open))
	for k := range d.open {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].run != ks[j].run {
			return ks[i].run < ks[j].run
		}
		return ks[i].kind < ks[j].kind
	})
	return ks
}

func (d *Dedup) summary(inc *incident, first, last time.Time) Notification {
	n := d.notification(inc.last, Firing, inc.folded, first, last)
	n.Message = fmt.Sprintf("%d more %s of %s in the last %s, restarts %d, last at %s",
		inc.folded, plural(inc.last.Kind, inc.folded), inc.last.Run, fmtWindow(d.Window), inc.last.Restarts, last.UTC().Format("15:04:05 UTC"))
	return n
}

func (d *Dedup) notification(e supervise.Event, status string, count int, first, last time.Time) Notification {
	n := Notification{
		Schema: Schema, Host: d.Host, Run: e.Run, Command: d.Command,
		Kind: string(e.Kind), Status: status, Severity: severity(e.Kind), Count: count,
		FirstSeen: first, LastSeen: last, Message: e.Sentence(),
		Ceiling: e.Ceiling, Peak: e.Peak, Usage: e.Usage, WorkingSet: e.WorkingSet, Cache: e.Cache,
		Restarts: e.Restarts, Signal: e.Signal, Victim: e.Victim, Diagnosis: e.Diagnosis,
	}
	if e.Kind == supervise.Exited || e.Kind == supervise.GaveUp {
		code := e.ExitCode
		n.ExitCode = &code
	}
	if status == Resolved {
		n.Severity = Info
		n.Diagnosis = nil
		n.Message = fmt.Sprintf("resolved: no %s of %s for %s and it is running", plural(e.Kind, 2), e.Run, fmtWindow(d.Window))
	}
	return n
}
