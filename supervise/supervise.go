// Package supervise owns a guarded run's process lifecycle: the preflight
// guard, starting the child inside its cgroup, forwarding signals, the stop
// sequence (stop signal, then the whole group killed at the timeout),
// reaping, telling why the child ended, restarting it with backoff, giving
// up on a crash loop, and restarting it gracefully before the ceiling.
//
// Every step is an Event, logged as one line and handed to Config.Events.
// It leaves the kernel's side (creating the group, limits, counters,
// watches) to package cgroup, and the command line and user-facing wording
// to main.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"golang.org/x/sys/unix"
)

// Config is one guarded run.
type Config struct {
	Name string
	// UniqueName lets Run fall back to NAME-PID when a live guardrun holds
	// NAME: set for names derived from the command, so two parallel
	// `guardrun -- make` do not collide, but never for a --name.
	UniqueName  bool
	Command     []string
	Backend     string // auto, v2, v1, none
	Limits      cgroup.Limits
	StopSignal  syscall.Signal
	StopTimeout time.Duration
	// KillMode says who gets the stop signal: KillControlGroup (every
	// process in the group; "" is the same), KillMixed or KillProcess
	// (the main child alone).
	KillMode  string
	Preflight Preflight

	Restart       Policy
	Backoff       Backoff
	MaxRestarts   int           // within RestartWindow; 0 never gives up
	RestartWindow time.Duration //
	// RestartAt is the usage (bytes) at which the child is stopped and
	// restarted, once it stayed there for RestartAtGrace.
	RestartAt      uint64
	RestartAtGrace time.Duration
	// Pressure is a PSI trigger for the group's memory.pressure in the
	// kernel's form ("some 100000 1000000"); RestartOnPressure restarts
	// the child when it fires.
	Pressure          string
	RestartOnPressure bool
	// HeapHint tells Node.js, Go and JVM children about the ceiling, and
	// asks Node.js for its diagnostic reports into DiagDir.
	HeapHint bool
	// DiagDir is the run's own directory (mode 0700) for the runtime's
	// reports (Node.js's --report-directory); "" for none. The caller
	// makes it (MakeDiagDir) and removes it.
	DiagDir string
	// BeforeStop is a shell command run once before each memory restart
	// (--restart-at, --restart-on-pressure) stops the child, bounded by
	// BeforeStopTimeout: the chance for a heap dump or a thread dump.
	BeforeStop        string
	BeforeStopTimeout time.Duration
	// Sample is how often the group is sampled: each sample is a Sampled
	// event (usage, peak) for state files, reports and metrics, and feeds
	// the diagnosis incidents carry; 0 samples nothing and guardrun wakes
	// only for the kernel's events and signals.
	Sample time.Duration
	// LeakWindow is the leak forecast's window: sustained growth over it
	// raises LeakSuspected. 0 is off; it needs Sample.
	LeakWindow time.Duration

	// Sentinel starts a sentinel process that, if guardrun dies (even by
	// SIGKILL), kills what is left in the child's group and removes it,
	// once a child has run for sentinelAfter. The binary must call
	// MaybeSentinel first thing in main.
	Sentinel bool
	// Init makes guardrun a child subreaper that reaps every orphan, as an
	// init must (PID 1 in a container). Off in tests that share a process.
	Init bool
	Log  *slog.Logger
	// Events receives every event, after it is logged. It must not block.
	Events func(Event)
	// Now is the clock events are stamped with; nil is time.Now.
	Now func() time.Time
	// Credential, when set, is the user the child runs as: setgroups,
	// setgid and setuid in the child before exec, so it cannot get back.
	// guardrun keeps its own privileges to manage the group.
	Credential *syscall.Credential
	// Stdin, Stdout, Stderr default to guardrun's own, passed untouched.
	Stdin, Stdout, Stderr *os.File
	Env                   []string
}

// forwarded are the signals passed on to the child, as tini does.
var forwarded = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGCONT,
}

// ErrStopped is a wait (preflight, backoff) ended because guardrun was told
// to stop; no child was started after it.
var ErrStopped = errors.New("stopped before the child started")

// Run supervises the command to the end: it starts it, and restarts it as
// the policy says, until it ends for good, guardrun gives up on it, or
// guardrun is told to stop. The error is guardrun's own failure (no group,
// no child, preflight); everything the child did is in Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var heap heapPlan
	if cfg.HeapHint && cfg.Limits.Max > 0 {
		heap = planHeap(cfg.Command, cfg.Env, cfg.Limits.Max, cfg.RestartAt, cfg.DiagDir)
		cfg.Env = heap.env
	}
	if cfg.Init {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("become a child subreaper: %w", err)
		}
	}
	// Signals are caught for the whole run, before any child exists, so
	// none is lost between a start and the loop, nor during a backoff.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, append([]os.Signal{unix.SIGCHLD}, forwarded...)...)
	defer signal.Stop(sigs)

	s := &supervisor{cfg: cfg, sigs: sigs, ctx: ctx, hints: strings.Join(heap.notes, " "), heap: heap,
		em:   &emitter{run: cfg.Name, log: cfg.Log, sink: cfg.Events, now: cfg.Now},
		loop: crashLoop{max: cfg.MaxRestarts, window: cfg.RestartWindow}}
	defer func() { s.sen.close() }()
	return s.run()
}

// supervisor is the state of one Run across its children.
type supervisor struct {
	cfg      Config
	ctx      context.Context
	sigs     chan os.Signal
	em       *emitter
	loop     crashLoop
	restarts int
	hints    string    // heap hints set, for the first started event
	heap     heapPlan  // what the heap hint set, and where reports go
	total    RunTotals // the whole run so far
	sen      *sentinel // nil until the first child has run for sentinelAfter
	senTried bool
}

// run is tini's main, with a restart loop around it: preflight, start,
// supervise, decide, back off.
func (s *supervisor) run() (*Result, error) {
	backoff := s.cfg.Backoff
	var last *Result
	for {
		if err := s.preflight(last != nil, &backoff); err != nil {
			if errors.Is(err, ErrStopped) && last != nil {
				return s.stopped(last), nil
			}
			return last, err
		}
		r, err := s.runChild()
		if err != nil {
			return last, err
		}
		last = r
		if r.Stopped {
			return s.stopped(r), nil
		}
		if !s.cfg.Restart.restarts(r) {
			return r, nil
		}
		if s.loop.exceeded(s.cfg.Now()) {
			r.GaveUp = s.loop.reason(r)
			s.em.emit(Event{Kind: GaveUp, Restarts: s.restarts, ExitCode: r.ExitCode, Cause: r.Cause, Reason: r.GaveUp})
			return r, nil
		}
		delay := backoff.Next(r.Duration)
		s.em.emit(Event{Kind: Restarting, Restarts: s.restarts, Delay: delay, Cause: r.Cause, Reason: r.Reason})
		if err := s.wait(delay); err != nil {
			return s.stopped(r), nil
		}
		s.restarts++
	}
}

func (s *supervisor) stopped(r *Result) *Result {
	r.Stopped = true
	s.em.emit(Event{Kind: Stopped, Restarts: s.restarts, ExitCode: r.ExitCode})
	return r
}

// preflight guards a start. The first start waits at most --preflight-wait
// and then fails; a restart waits as long as it takes, on the restart
// backoff, because a service under a restart policy is meant to come back
// once memory does.
func (s *supervisor) preflight(restart bool, backoff *Backoff) error {
	p := s.cfg.Preflight
	if p.Need == 0 {
		return nil
	}
	avail := p.Avail
	if avail == nil {
		avail = MemAvailable
	}
	if !restart {
		p.Sleep = func(_ context.Context, d time.Duration) error { return s.wait(d) }
		p.Waiting = func(a uint64) {
			s.em.emit(Event{Kind: PreflightWait, Available: a, Need: p.Need, Delay: p.Wait})
		}
		err := p.Check(s.ctx)
		var pe *PreflightError
		if errors.As(err, &pe) {
			s.em.emit(Event{Kind: PreflightFailed, Available: pe.Available, Need: pe.Need})
		}
		return err
	}
	for said := false; ; said = true {
		a, err := avail()
		if err != nil {
			return fmt.Errorf("preflight: read MemAvailable: %w", err)
		}
		if a >= p.Need {
			return nil
		}
		delay := backoff.Next(0)
		if !said {
			s.em.emit(Event{Kind: PreflightWait, Available: a, Need: p.Need, Delay: delay, Restarts: s.restarts})
		}
		if err := s.wait(delay); err != nil {
			return err
		}
	}
}

// wait sleeps between children. TERM or INT (or the context) ends it at
// once with ErrStopped, and no new child is started, even when the stop
// came in before the wait or together with its end (a zero backoff);
// orphans are reaped meanwhile; other signals have no child to go to.
func (s *supervisor) wait(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if s.stopPending() {
				return s.stopping()
			}
			return nil
		case <-s.ctx.Done():
			return s.stopping()
		case sig := <-s.sigs:
			if s.handleIdle(sig) {
				return s.stopping()
			}
		}
	}
}

// stopPending reports a stop that is already asked for, without waiting.
func (s *supervisor) stopPending() bool {
	for {
		select {
		case <-s.ctx.Done():
			return true
		case sig := <-s.sigs:
			if s.handleIdle(sig) {
				return true
			}
		default:
			return false
		}
	}
}

// handleIdle handles a signal while no child runs; true means stop.
func (s *supervisor) handleIdle(sig os.Signal) bool {
	switch sig {
	case unix.SIGTERM, unix.SIGINT:
		return true
	case unix.SIGCHLD:
		if s.cfg.Init {
			reap(-1, true)
		}
	}
	return false
}

func (s *supervisor) stopping() error {
	s.em.emit(Event{Kind: Stopping, Restarts: s.restarts})
	return ErrStopped
}

// WantsDiagDir reports whether a run needs a directory for its runtime's
// reports (MakeDiagDir): the heap hint is on, there is a ceiling, and the
// command is a Node.js or JVM program.
func WantsDiagDir(cfg Config) bool {
	if !cfg.HeapHint || cfg.Limits.Max == 0 {
		return false
	}
	rt := runtimeOf(cfg.Command[0])
	return rt == "node" || rt == "jvm"
}
