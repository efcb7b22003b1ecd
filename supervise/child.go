package supervise

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"golang.org/x/sys/unix"
)

// runChild runs one child in a group of its own, from start to reaping,
// and removes the group. Each child gets a fresh group, so its peak and
// OOM counters are its own.
func (s *supervisor) runChild() (*Result, error) {
	cfg, log := s.cfg, s.cfg.Log
	g, err := cgroup.Open(cgroup.Options{Name: cfg.Name, Backend: cfg.Backend, Limits: cfg.Limits})
	if errors.Is(err, cgroup.ErrBusy) && cfg.UniqueName {
		s.cfg.Name = fmt.Sprintf("%s-%d", cfg.Name, os.Getpid())
		s.em.run, cfg.Name = s.cfg.Name, s.cfg.Name
		g, err = cgroup.Open(cgroup.Options{Name: cfg.Name, Backend: cfg.Backend, Limits: cfg.Limits})
	}
	if err != nil {
		return nil, err
	}
	// Named before the child starts: nothing it forks is unaccounted for.
	s.sen.watch(g)
	defer g.Remove()
	if why := cgroup.NoCgroupReason(g); why != "" && s.restarts == 0 {
		log.Warn("no cgroup: the ceiling is enforced best-effort by sampling RSS, and a fast leak can overshoot it", "run", cfg.Name, "why", why)
	}
	var w *cgroup.Watcher
	if cfg.RestartAt > 0 || cfg.Pressure != "" {
		if w, err = g.Watch(cgroup.WatchSpec{Threshold: cfg.RestartAt, Trigger: cfg.Pressure}); err != nil {
			return nil, err
		}
		defer w.Close()
	}

	cmd, tty := command(cfg)
	started, since := time.Now(), monotonicUsec()
	if err := g.Start(cmd); err != nil {
		return nil, &StartError{Command: cfg.Command[0], Err: err}
	}
	s.em.emit(Event{Kind: Started, Pid: cmd.Process.Pid, Limit: cfg.Limits.Max, Restarts: s.restarts, Cgroup: g.Backend() + ":" + g.Path(), HeapHint: s.hints})
	s.hints = ""

	r := &Result{Name: cfg.Name, Backend: g.Backend(), Path: g.Path(), Pid: cmd.Process.Pid, Restarts: s.restarts}
	c := &child{supervisor: s, g: g, p: cmd.Process, r: r}
	if w != nil {
		c.notices = w.C
	}
	if cfg.Sentinel && !s.senTried && g.Backend() != "none" {
		c.sentinelDue = time.After(sentinelAfter)
	}
	if cfg.Sample > 0 {
		c.sampler = &sampler{every: cfg.Sample}
		if cfg.LeakWindow > 0 {
			// Per child: a restart's start-up ramp is a new warm-up.
			c.leaks = newLeakDetector(cfg.LeakWindow, cfg.Limits.Max)
		}
		c.sample()
		t := time.NewTicker(cfg.Sample)
		defer t.Stop()
		c.samples = t.C
	}
	c.supervise()
	r.Duration = time.Since(started)
	// guardrun reaps with wait4, not Process.Wait, so the pidfd os/exec
	// holds would stay open until a garbage collection finalised it; over
	// thousands of restarts that is a pile of fds. The child is reaped:
	// let it go now.
	cmd.Process.Release()
	if tty >= 0 {
		reclaimTTY(tty)
	}
	// Counters are read before the group goes: removing it loses them.
	if r.Stats, err = g.Stats(); err != nil {
		log.Warn("read cgroup counters", "run", cfg.Name, "err", err)
	}
	r.classify()
	var diag *Diagnosis
	if c.sampler != nil && (r.Stats.OOMKills > 0 || r.ExitCode != 0) {
		diag = c.diagnosis()
		if r.Stats.OOMKills > 0 {
			pids := []int{r.Pid}
			for _, p := range diag.Top {
				pids = append(pids, p.Pid)
			}
			diag.OOMReport = oomReport(cfg.Name, since, pids)
		}
	}
	// The child is gone; what it left behind in its group goes with it.
	if err := g.Remove(); err != nil {
		log.Warn("remove cgroup", "run", cfg.Name, "path", g.Path(), "err", err)
	} else {
		s.sen.clear()
	}
	if r.Stats.OOMKills > 0 {
		s.em.emit(Event{Kind: OOMKill, Pid: r.Pid, Usage: r.Stats.Peak, Limit: r.Stats.Limit, Peak: r.Stats.Peak, Restarts: s.restarts, Reason: r.oomWho(), Diagnosis: diag})
	}
	e := Event{Kind: Exited, Pid: r.Pid, Cause: r.Cause, ExitCode: r.ExitCode, Peak: r.Stats.Peak, Limit: r.Stats.Limit, Uptime: r.Duration, Restarts: s.restarts, Reason: r.Reason, Diagnosis: diag}
	if r.Status.Signaled() {
		e.Signal = signalName(r.Status.Signal())
	}
	s.em.emit(e)
	return r, nil
}

// command builds the child. It gets its own process group, so a signal
// guardrun forwards is not doubled by one the terminal sends to guardrun's
// group; and when guardrun owns the terminal's foreground, the child gets
// it, so Ctrl-C, Ctrl-Z and full-screen programs work as if bare. tty is
// the terminal fd handed over, or -1.
func command(cfg Config) (cmd *exec.Cmd, tty int) {
	cmd = exec.Command(cfg.Command[0], cfg.Command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = orFile(cfg.Stdin, os.Stdin), orFile(cfg.Stdout, os.Stdout), orFile(cfg.Stderr, os.Stderr)
	cmd.Env = cfg.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If guardrun dies, even by SIGKILL, the child must not live on.
		Pdeathsig:  unix.SIGKILL,
		Credential: cfg.Credential,
	}
	tty = -1
	if in, ok := cmd.Stdin.(*os.File); ok {
		if pg, err := unix.IoctlGetInt(int(in.Fd()), unix.TIOCGPGRP); err == nil && pg == unix.Getpgrp() {
			cmd.SysProcAttr.Foreground = true
			cmd.SysProcAttr.Ctty = 0
			tty = int(in.Fd())
		}
	}
	return cmd, tty
}

func orFile(f, def *os.File) *os.File {
	if f != nil {
		return f
	}
	return def
}

// reclaimTTY takes the terminal's foreground back from the finished child,
// so guardrun's last line is not stopped by SIGTTOU.
func reclaimTTY(fd int) {
	signal.Ignore(unix.SIGTTOU)
	defer signal.Reset(unix.SIGTTOU)
	unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, unix.Getpgrp())
}

// child is one running child and what its supervision has seen.
type child struct {
	*supervisor
	g       cgroup.Group
	p       *os.Process
	r       *Result
	notices <-chan cgroup.Notice

	deadline <-chan time.Time // the stop timeout, once stopping
	grace    <-chan time.Time // --restart-at-grace, once over the threshold
	lastOver time.Time        // the latest threshold notice
	lastPSI  time.Time        // the latest pressure notice

	sampler     *sampler         // nil: nothing asked for a diagnosis
	samples     <-chan time.Time // its ticker
	oomSeen     uint64           // the group's oom_kill count at the last sample
	detailAt    time.Time        // the last sample with memory.stat and processes
	detailUsage uint64           // the usage then
	leaks       *leakDetector    // nil: no leak forecast
	sentinelDue <-chan time.Time // when to start the run's sentinel
}

// detailEvery is how often a sample also reads memory.stat and each
// process's RSS for a diagnosis: a couple of cgroup files per second cost
// next to nothing, one /proc file per process of a large tree does not.
// Events that carry a diagnosis take a full sample of their own first.
const detailEvery = 5 * time.Second

// leakCheck feeds the leak forecast; a leak it establishes is an event.
func (c *child) leakCheck(now time.Time, st cgroup.Stats) {
	if c.leaks == nil {
		return
	}
	if l, ok := c.leaks.add(Sample{Time: now, Usage: st.Current}); ok {
		c.em.emit(Event{Kind: LeakSuspected, Time: now, Pid: c.p.Pid, Usage: l.Usage, Limit: l.Limit,
			Rate: l.Rate, Left: l.Left, Restarts: c.restarts, Reason: l.String(), Diagnosis: c.diagnosis()})
	}
}

// moved reports whether usage changed by more than an eighth since the
// last detailed sample: a group that grows fast is heading for an
// incident, and its diagnosis must show the processes as they were just
// before, not five seconds before.
func moved(was, now uint64) bool {
	d := max(was, now) - min(was, now)
	return d > max(was, now)/8
}

// sample records the group's usage for the timeline (a Sampled event and
// the leak detector) and, at most every detailEvery or when full is set,
// its memory.stat and largest processes for a diagnosis.
func (c *child) sample() { c.sampleAt(time.Now(), true) }

func (c *child) sampleAt(now time.Time, full bool) {
	st, err := c.g.Stats()
	if err != nil {
		return
	}
	pids, _ := c.g.Procs()
	killed := st.OOMKills > c.oomSeen
	c.oomSeen = st.OOMKills
	if len(pids) == 0 || killed {
		// The OOM killer just struck, or the child is dead and not
		// reaped yet: a sample now would show the aftermath, not what
		// led to it, so the one before stays the last.
		return
	}
	c.em.emit(Event{Kind: Sampled, Time: now, Pid: c.p.Pid, Usage: st.Current, Peak: st.Peak, Limit: st.Limit, Restarts: c.restarts})
	c.leakCheck(now, st)
	if !full && now.Sub(c.detailAt) < detailEvery && !moved(c.detailUsage, st.Current) {
		c.sampler.record(now, st.Current)
		return
	}
	c.detailAt, c.detailUsage = now, st.Current
	stat, _ := c.g.MemoryStat()
	c.sampler.sample(now, st.Current, pids, stat)
}

// diagnosis is what the last sample saw; nil without sampling. Callers
// with a live child sample first.
func (c *child) diagnosis() *Diagnosis {
	if c.sampler == nil {
		return nil
	}
	return &Diagnosis{MemoryStat: c.sampler.stat, Top: slices.Clone(c.sampler.top), Growth: slices.Clone(c.sampler.growth)}
}

// pressureQuiet ends a pressure episode: a PSI trigger fires at most once
// per window for as long as the stall lasts, and one event per episode is
// what a person wants to read, not one per window.
const pressureQuiet = 10 * time.Second

// stillOver is how recent a threshold notice must be, when the grace period
// ends, to say the child is still pressing on the threshold. On v2 the
// threshold is memory.high: the kernel holds usage near it and bumps the
// high counter (at most every 10 ms) for as long as the child keeps trying
// to grow, so a notice this recent means it still is.
const stillOver = 500 * time.Millisecond

// supervise is tini's wait_and_forward_signal and reap_zombies, plus the
// watches: it forwards signals, runs the stop sequence, restarts before the
// ceiling, reaps, and returns when the child is gone.
func (c *child) supervise() {
	done := c.ctx.Done()
	for {
		if st, ok := reap(c.p.Pid, c.cfg.Init); ok {
			c.r.Status = st
			return
		}
		select {
		case sig := <-c.sigs:
			switch sig {
			case unix.SIGCHLD:
			case unix.SIGTERM:
				c.stop(stopSignal(c.cfg), "")
			case unix.SIGINT:
				c.stop(unix.SIGINT, "")
			default:
				c.signal(sig.(syscall.Signal))
			}
		case <-done:
			done = nil
			c.stop(stopSignal(c.cfg), "")
		case <-c.deadline:
			c.deadline = nil
			c.cfg.Log.Warn("stop timeout: killing the group", "run", c.cfg.Name, "timeout", c.cfg.StopTimeout)
			c.kill()
		case n := <-c.notices:
			c.notice(n)
		case <-c.grace:
			c.grace = nil
			c.graceOver()
		case <-c.sentinelDue:
			c.sentinelDue = nil
			c.ensureSentinel(c.g)
		case now := <-c.samples:
			c.sampleAt(now, false)
		}
	}
}

// stop starts the stop sequence: the signal now, the whole group at the
// stop timeout. reason is "" when guardrun was told to stop, or why
// guardrun itself stops the child to restart it.
func (c *child) stop(sig syscall.Signal, reason string) {
	switch {
	case reason != "" && (c.r.Stopped || c.r.Reason != ""):
		return // already stopping; guardrun's own reasons do not escalate
	case reason == "" && c.r.Stopped:
		// A second INT or TERM while stopping: the user means it now.
		c.cfg.Log.Warn("second stop request: killing the group", "run", c.cfg.Name)
		c.kill()
		return
	case reason == "":
		c.r.Stopped = true
		c.em.emit(Event{Kind: Stopping, Pid: c.p.Pid, Restarts: c.restarts})
	default:
		c.r.Reason = reason
	}
	c.signal(sig)
	if c.deadline == nil {
		c.deadline = time.After(c.cfg.StopTimeout)
	}
}

func (c *child) kill() {
	c.r.Forced = true
	if err := c.g.Kill(); err != nil {
		c.cfg.Log.Error("kill group", "run", c.cfg.Name, "err", err)
	}
}

func (c *child) signal(sig syscall.Signal) {
	if err := c.p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.cfg.Log.Warn("forward signal", "pid", c.p.Pid, "signal", sig, "err", err)
	}
}

// notice handles what the group's watcher reports. Crossing --restart-at
// starts the grace period; only usage that is still there when it ends
// restarts the child, so a start-up spike does not.
func (c *child) notice(n cgroup.Notice) {
	st, _ := c.g.Stats()
	switch n {
	case cgroup.Threshold:
		c.lastOver = time.Now()
		if c.grace != nil || c.r.Reason != "" || c.r.Stopped {
			return
		}
		if c.sampler != nil {
			c.sample()
		}
		c.em.emit(Event{Kind: ThresholdCrossed, Pid: c.p.Pid, Usage: st.Current, Limit: st.Limit, Threshold: c.cfg.RestartAt, Restarts: c.restarts, Delay: c.cfg.RestartAtGrace, Diagnosis: c.diagnosis()})
		c.grace = time.After(c.cfg.RestartAtGrace)
	case cgroup.Pressure:
		now := time.Now()
		ongoing := now.Sub(c.lastPSI) < pressureQuiet
		c.lastPSI = now
		if ongoing || c.r.Reason != "" || c.r.Stopped {
			return
		}
		if c.sampler != nil {
			c.sample()
		}
		c.em.emit(Event{Kind: PressureStall, Pid: c.p.Pid, Usage: st.Current, Limit: st.Limit, Restarts: c.restarts, Reason: c.cfg.Pressure, Diagnosis: c.diagnosis()})
		if c.cfg.RestartOnPressure {
			c.stop(stopSignal(c.cfg), "pressure")
		}
	}
}

// graceOver restarts the child if its usage stayed at the threshold: it is
// still at or above it, or (v2, where the kernel holds usage just under
// memory.high) it is still pressing on it. A spike that has passed does
// not restart anything; the next crossing starts a new grace period.
func (c *child) graceOver() {
	st, err := c.g.Stats()
	if err != nil {
		return
	}
	if st.Current >= c.cfg.RestartAt || time.Since(c.lastOver) < stillOver {
		c.cfg.Log.Warn("restart-at: usage stayed over the threshold; stopping the child to restart it",
			"run", c.cfg.Name, "usage", st.Current, "threshold", c.cfg.RestartAt, "grace", c.cfg.RestartAtGrace)
		c.stop(stopSignal(c.cfg), "restart_at")
	}
}

func stopSignal(cfg Config) syscall.Signal {
	if cfg.StopSignal == 0 {
		return unix.SIGTERM
	}
	return cfg.StopSignal
}

// reap collects exited children without blocking and reports the child's
// status once it is among them. As an init it reaps every orphan that was
// reparented to it; otherwise only its own child.
func reap(child int, all bool) (unix.WaitStatus, bool) {
	var childStatus unix.WaitStatus
	found := false
	who := child
	if all {
		who = -1
	}
	for {
		var st unix.WaitStatus
		pid, err := unix.Wait4(who, &st, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return childStatus, found
		}
		if pid == child {
			childStatus, found = st, true
			if !all {
				return childStatus, found
			}
		}
	}
}
