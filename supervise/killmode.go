package supervise

import (
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kill modes, in systemd's words (KillMode=): who gets the stop signal.
const (
	// KillControlGroup: every process in the child's group, as systemd's
	// default. A `npm start` is npm, a shell and node: the stop signal
	// to npm alone never reaches the app, and the app is then killed.
	KillControlGroup = "control-group"
	// KillMixed: the main child alone; the rest are killed with the
	// group at the stop timeout.
	KillMixed = "mixed"
	// KillProcess: the main child alone, as tini does without -g.
	KillProcess = "process"
)

// KillModes lists what --kill-mode accepts.
var KillModes = []string{KillControlGroup, KillMixed, KillProcess}

// stopSignalGroup sends the stop signal as the kill mode says: to the
// main child, and under control-group to every process in the group. A
// process may fork between a read of the group and the signals, so the
// group is read again until a pass finds no process not yet signalled
// (bounded: a fork bomb is pids.max's to stop, and the timeout's).
func (c *child) stopSignalGroup(sig syscall.Signal) {
	c.signal(sig)
	if c.cfg.KillMode != "" && c.cfg.KillMode != KillControlGroup {
		return
	}
	sent := []int{c.r.Pid}
	for range 4 {
		pids, err := c.g.Procs()
		if err != nil {
			return
		}
		more := false
		for _, p := range pids {
			if slices.Contains(sent, p) {
				continue
			}
			more = true
			sent = append(sent, p)
			unix.Kill(p, sig)
		}
		if !more {
			return
		}
	}
}

// drainEvery is how often the tail of a stop looks whether the group is
// empty: the kernel tells an empty v2 group by an event, v1 by none, and
// this lasts at most the rest of --stop-timeout.
const drainEvery = 20 * time.Millisecond

// drain gives what is left in the group the rest of the stop timeout once
// the main child has exited during a stop: a worker finishing its request,
// the app under `npm start` saving its state. A second stop request, or
// the timeout, kills the group; the group's end is what ends the wait.
func (c *child) drain() {
	if c.deadline == nil || c.r.Forced {
		return
	}
	tick := time.NewTicker(drainEvery)
	defer tick.Stop()
	for {
		if c.cfg.Init {
			reap(-1, true)
		}
		if pids, err := c.g.Procs(); err != nil || len(pids) == 0 {
			return
		}
		select {
		case <-c.deadline:
			c.deadline = nil
			c.cfg.Log.Warn("stop timeout: killing what is left of the group", "run", c.cfg.Name, "timeout", c.cfg.StopTimeout)
			c.kill()
			return
		case sig := <-c.sigs:
			if sig == unix.SIGTERM || sig == unix.SIGINT {
				c.cfg.Log.Warn("second stop request: killing the group", "run", c.cfg.Name)
				c.kill()
				return
			}
		case <-tick.C:
		}
	}
}
