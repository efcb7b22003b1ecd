package supervise

import (
	"fmt"
	"time"
)

// Policy says when a child that ended is started again, in systemd's words.
type Policy string

const (
	RestartNo        Policy = "no"         // never: a wrapped CI build is never re-run
	RestartOnFailure Policy = "on-failure" // non-zero exit, signal death, OOM kill
	RestartAlways    Policy = "always"     // also after exit 0
)

// Policies lists what --restart accepts.
var Policies = []Policy{RestartNo, RestartOnFailure, RestartAlways}

// restarts reports whether r is to be followed by a new child. A child that
// guardrun itself stopped to restart it (--restart-at, pressure) is
// restarted under any policy but "no", whatever it exited with; one it
// stopped because it was asked to restart it (guardrun restart,
// --restart-every) under any policy.
func (p Policy) restarts(r *Result) bool {
	switch {
	case r.planned():
		return true // a person or the schedule asked for it
	case p == RestartNo || p == "":
		return false
	case p == RestartAlways || r.Reason != "":
		return true
	}
	return r.ExitCode != 0
}

// crashLoop counts restarts in a sliding window: past max of them within
// window, the service is crash-looping and guardrun gives up, as systemd's
// StartLimitBurst= within StartLimitIntervalSec= does.
type crashLoop struct {
	max    int // 0: never give up
	window time.Duration
	times  []time.Time
}

// exceeded records a restart at now and reports whether it is one too many.
func (l *crashLoop) exceeded(now time.Time) bool {
	if l.max <= 0 {
		return false
	}
	keep := l.times[:0]
	for _, t := range l.times {
		if now.Sub(t) < l.window {
			keep = append(keep, t)
		}
	}
	l.times = append(keep, now)
	return len(l.times) > l.max
}

// span is the time from the first to the last restart in the window.
func (l *crashLoop) span() time.Duration {
	if len(l.times) < 2 {
		return 0
	}
	return l.times[len(l.times)-1].Sub(l.times[0])
}

func (l *crashLoop) reason(last *Result) string {
	return fmt.Sprintf("%d restarts in %s (--max-restarts %d within --restart-window %s); last: %s",
		len(l.times)-1, fmtDuration(l.span()), l.max, l.window, ended(last.exited()))
}
