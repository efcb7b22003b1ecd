// Package supervise owns a guarded run's process lifecycle: the preflight
// guard, starting the child inside its cgroup, forwarding signals, the stop
// sequence (stop signal, then the whole group killed at the timeout),
// reaping, telling why the child ended, restarting it with backoff, giving
// up on a crash loop, and restarting it gracefully before the ceiling.
//
// Every step is an Event, logged as one line and handed to each Observer
// of the run, in order; words.go says each in a sentence. It leaves the
// kernel's side (creating the group, limits, counters, watches) to package
// cgroup, and the command line to main.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
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
	// RestartEvery restarts the child gracefully this long after it
	// started (up to everyJitter earlier), as a restart asked for: not a
	// failure, no backoff, not counted toward MaxRestarts. 0 is off.
	RestartEvery time.Duration
	// Control brings requests from outside the run (guardrun restart,
	// stop, signal NAME); nil for none. See Request.
	Control <-chan Request
	// Pressure is a PSI trigger for the group's memory.pressure in the
	// kernel's form ("some 100000 1000000"); RestartOnPressure restarts
	// the child when it fires.
	Pressure          string
	RestartOnPressure bool
	// HeapHint tells Node.js, Go and JVM children about the ceiling, and
	// asks Node.js for its diagnostic reports into DiagDir.
	HeapHint bool
	// DiagDir is the run's own directory (mode 0700) for the runtime's
	// reports (Node.js's --report-directory); "" for none. Prepare makes
	// one (MakeDiagDir) for a Node.js or JVM command under the heap hint,
	// and the run removes it at its end.
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
	// Now is the clock events are stamped with; nil is time.Now.
	Now func() time.Time
	// Credential, when set, is the user the child runs as: setgroups,
	// setgid and setuid in the child before exec, so it cannot get back.
	// guardrun keeps its own privileges to manage the group.
	Credential *syscall.Credential
	// Stdin, Stdout, Stderr default to guardrun's own, passed untouched.
	Stdin, Stdout, Stderr *os.File
	Env                   []string
	// Dir is the child's working directory; "" is guardrun's own. A
	// relative Command[0] is taken from there, as os/exec does.
	Dir string
	// ListenFiles are listening sockets guardrun holds for the whole run
	// and hands to every child, in order, under systemd's socket-activation
	// protocol: descriptors from 3, LISTEN_FDS, LISTEN_FDNAMES from
	// ListenNames (one each), and LISTEN_PID, the child's pid (see startIn).
	// While a child restarts, connections wait in the kernel's backlog.
	// The caller owns them: Run neither accepts on them nor closes them.
	ListenFiles []*os.File
	ListenNames []string
}

// forwarded are the signals passed on to the child, as tini does.
var forwarded = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGCONT,
}

// catch is the run's signal catch: signal.Notify hands each signal to
// the runtime's signal thread and waits for it, one round trip per
// signal (0.1-0.4 ms for the nine, measured, and once in a while some
// milliseconds on a busy host), so it goes on beside other work: the
// group's making in Prepare, or from CatchSignals on, the flags' parsing.
type catch struct {
	sigs   chan os.Signal
	caught chan struct{} // closed once the signals are caught
}

func startCatch() catch {
	c := catch{make(chan os.Signal, 32), make(chan struct{})}
	go func() {
		signal.Notify(c.sigs, append([]os.Signal{unix.SIGCHLD}, forwarded...)...)
		close(c.caught)
	}()
	return c
}

var early struct {
	sync.Mutex
	c catch
}

// CatchSignals begins the catch of the run's signals before Prepare, for a
// caller that knows early that it will run a command (main, before it
// parses its flags). The first Prepare takes it over; DropSignals lets it
// go when no Prepare came (the flags were refused).
func CatchSignals() {
	early.Lock()
	defer early.Unlock()
	if early.c.sigs == nil {
		early.c = startCatch()
	}
}

// DropSignals ends an early catch that no Prepare took over.
func DropSignals() {
	early.Lock()
	defer early.Unlock()
	if c := early.c; c.sigs != nil {
		<-c.caught
		signal.Stop(c.sigs)
		early.c = catch{}
	}
}

// takeCatch hands Prepare the early catch, once, or a new one.
func takeCatch() (chan os.Signal, chan struct{}) {
	early.Lock()
	defer early.Unlock()
	c := early.c
	if c.sigs == nil {
		c = startCatch()
	}
	early.c = catch{}
	return c.sigs, c.caught
}

// An Observer consumes a run's events: the notifier, the recorder,
// systemd's notify protocol. Observe is called on the supervisor's
// goroutine, in order, after the event is logged; it must not block and
// must not keep the Event's pointers to change them.
type Observer interface{ Observe(Event) }

// ObserverFunc is a function as an Observer.
type ObserverFunc func(Event)

func (f ObserverFunc) Observe(e Event) { f(e) }

// Supervisor is one run, prepared: its name settled and its first group
// made, with nothing started and nothing told yet.
type Supervisor struct {
	cfg     Config
	first   cgroup.Group
	runtime string // the command's runtime (runtimeOf), under the heap hint
	ownDir  string // the DiagDir Prepare made, to remove at the end
	hold    *cgroup.Hold
	// sigs catches the run's signals from Prepare on: a TERM between
	// Prepare and Run is a stop before any start, not a death that leaves
	// the first group behind. caught is closed once they are caught.
	sigs   chan os.Signal
	caught chan struct{}
}

// DiagDirError is a directory for the runtime's reports that could not be
// made.
type DiagDirError struct{ Err error }

func (e *DiagDirError) Error() string {
	return "make a directory for the runtime's diagnostic reports: " + e.Err.Error()
}
func (e *DiagDirError) Unwrap() error { return e.Err }

// Prepare settles the run's name and makes its first group, before any
// event: a name derived from the command (UniqueName) that a live
// guardrun holds becomes NAME-PID here, so that every consumer is built
// with the name the run keeps. The error is guardrun's own failure (no
// group); nothing was started.
func Prepare(cfg Config) (*Supervisor, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	sv := &Supervisor{}
	sv.sigs, sv.caught = takeCatch()
	var rt chan string // the command's runtime, read beside
	if cfg.HeapHint && cfg.Limits.Ceiling > 0 {
		// Read once: a PATH lookup, the Go build information and a #! line.
		prog := cfg.Command[0]
		if cfg.Dir != "" && strings.Contains(prog, "/") && !filepath.IsAbs(prog) {
			prog = filepath.Join(cfg.Dir, prog) // where the child will find it
		}
		rt = make(chan string, 1)
		go func() { rt <- runtimeOf(prog) }()
	}
	g, err := cgroup.Open(cgroup.Options{Name: cfg.Name, Backend: cfg.Backend, Limits: cfg.Limits})
	if errors.Is(err, cgroup.ErrBusy) && cfg.UniqueName {
		cfg.Name = fmt.Sprintf("%s-%d", cfg.Name, os.Getpid())
		g, err = cgroup.Open(cgroup.Options{Name: cfg.Name, Backend: cfg.Backend, Limits: cfg.Limits})
	}
	if err != nil {
		sv.Close()
		return nil, err
	}
	// The name is the run's from here to its end, across its children
	// (cgroup.Hold).
	sv.cfg, sv.first, sv.hold = cfg, g, cgroup.TakeHold(g)
	if rt != nil {
		sv.runtime = <-rt
		if (sv.runtime == "node" || sv.runtime == "jvm") && cfg.DiagDir == "" {
			uid, gid := -1, -1
			if c := cfg.Credential; c != nil {
				uid, gid = int(c.Uid), int(c.Gid)
			}
			dir, err := MakeDiagDir(cfg.Name, uid, gid)
			if err != nil {
				sv.Close()
				return nil, &DiagDirError{err}
			}
			sv.cfg.DiagDir, sv.ownDir = dir, dir
		}
	}
	return sv, nil
}

// Name is the run's name, as every event carries it.
func (sv *Supervisor) Name() string { return sv.cfg.Name }

// Close removes what Prepare made and no run took over: the first group of
// a run that was prepared and never run, and the runtime's report
// directory, and the run's hold on its name (Run closes at its end).
func (sv *Supervisor) Close() {
	if sv.sigs != nil {
		<-sv.caught
		signal.Stop(sv.sigs)
		sv.sigs = nil
	}
	if sv.first != nil {
		sv.first.Remove()
		sv.first = nil
	}
	sv.hold.Release()
	if sv.ownDir != "" {
		RemoveDiagDir(sv.ownDir)
		sv.ownDir = ""
	}
}

// Run prepares and runs: see Prepare and Supervisor.Run.
func Run(ctx context.Context, cfg Config, obs ...Observer) (*Result, error) {
	sv, err := Prepare(cfg)
	if err != nil {
		return failed(cfg.Name, err), err
	}
	return sv.Run(ctx, obs...)
}

// Run supervises the command to the end: it starts it, and restarts it as
// the policy says, until it ends for good, guardrun gives up on it, or
// guardrun is told to stop. Each event goes to the log and then to obs,
// in order. The Result is how the run ended on every path, those where no
// child was started included, and its ExitCode is what guardrun exits
// with; the error is guardrun's own failure (no child, preflight), for
// its words.
func (sv *Supervisor) Run(ctx context.Context, obs ...Observer) (*Result, error) {
	cfg := sv.cfg
	defer sv.Close() // what the run did not hand on: its report directory
	var heap heapPlan
	if cfg.HeapHint && cfg.Limits.Ceiling > 0 {
		heap = planHeap(sv.runtime, cfg.Command, cfg.Env, cfg.Limits.Ceiling, cfg.RestartAt, cfg.DiagDir)
		cfg.Env = heap.env
	}
	if cfg.Init {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			err = fmt.Errorf("become a child subreaper: %w", err)
			return failed(cfg.Name, err), err
		}
	}
	// Signals are caught for the whole run, from Prepare on, so none is
	// lost before the first start, between a start and the loop, nor
	// during a backoff. They are let go in the background at the end: the
	// round trips of signal.Stop are not the exit's to wait for, and a
	// signal between the end and the let-go finds no child to go to.
	sigs := sv.sigs
	<-sv.caught
	sv.sigs = nil
	defer func() { go signal.Stop(sigs) }()

	s := &supervisor{cfg: cfg, sigs: sigs, ctx: ctx, hints: strings.Join(heap.notes, " "), heap: heap,
		em:   &emitter{run: cfg.Name, log: cfg.Log, obs: obs, now: cfg.Now},
		loop: crashLoop{max: cfg.MaxRestarts, window: cfg.RestartWindow}, next: sv.first, hold: sv.hold}
	sv.first = nil
	defer func() { s.sen.close() }()
	r, err := s.run()
	r.decide()
	s.answerEnd(r)
	return r, err
}

// supervisor is the state of one Run across its children.
type supervisor struct {
	cfg      Config
	ctx      context.Context
	sigs     chan os.Signal
	halt     unix.Signal // the TERM or INT that stopped the run while no child ran
	em       *emitter
	loop     crashLoop
	restarts int
	hints    string    // heap hints set, for the first started event
	heap     heapPlan  // what the heap hint set, and where reports go
	total    RunTotals // the whole run so far
	sen      *sentinel // nil until the first child has run for sentinelAfter
	senTried bool
	// next is the group the next child starts in, made by Prepare for the
	// first; nil: runChild makes one, under the run's hold on its name.
	next cgroup.Group
	hold *cgroup.Hold
	// asked are the asked restarts waiting for the next child to run, and
	// stops the asked stops waiting for the run's end, to answer them.
	asked []pendingRestart
	stops []Request
}

// run is tini's main, with a restart loop around it: preflight, start,
// supervise, decide, back off.
func (s *supervisor) run() (*Result, error) {
	defer func() {
		if s.next != nil {
			s.next.Remove()
		}
	}()
	backoff := s.cfg.Backoff
	var last *Result
	for {
		ok, err := s.preflight(last != nil, &backoff)
		if err != nil {
			return s.failed(err), err
		}
		if ok && last == nil && s.stopPending() {
			// A stop that came after Prepare, before the first start.
			ok = false
		}
		if !ok {
			if last == nil {
				last = &Result{Name: s.cfg.Name, Cause: CauseStopped}
			}
			return s.stopped(last), nil
		}
		r, err := s.runChild()
		if err != nil {
			return s.failed(err), err
		}
		last = r
		if r.Asked {
			return s.stopped(r), nil
		}
		if !s.cfg.Restart.restarts(r) {
			return r, nil
		}
		// An asked or scheduled restart is no failure: it starts the
		// child again at once and never counts toward a crash loop.
		var delay time.Duration
		if !r.planned() {
			if s.loop.exceeded(s.cfg.Now()) {
				r.GaveUp = s.loop.reason(r)
				s.em.emit(Event{Kind: GaveUp, Restarts: s.restarts, ExitCode: r.ExitCode, Cause: r.Cause, Detail: r.GaveUp})
				return r, nil
			}
			delay = backoff.Next(r.Duration)
		}
		s.em.emit(Event{Kind: Restarting, Restarts: s.restarts, Delay: delay, Cause: r.Cause, Reason: r.Reason, ExitCode: r.ExitCode, By: s.askedBy()})
		if !s.wait(delay) {
			return s.stopped(r), nil
		}
		s.restarts++
	}
}

// failed ends the run on guardrun's own failure, with the run's figures
// so far.
func (s *supervisor) failed(err error) *Result {
	r := failed(s.cfg.Name, err)
	r.Restarts, r.Run = s.restarts, s.total
	return r
}

// stopped ends the run because guardrun was asked to stop: after the
// child it stopped, or with none running.
func (s *supervisor) stopped(r *Result) *Result {
	r.Stopped = true
	if !r.Asked {
		r.Halt = s.halt
	}
	r.decide()
	s.em.emit(Event{Kind: Stopped, Restarts: s.restarts, ExitCode: r.ExitCode})
	return r
}

// preflight guards a start: true when there is room, false when guardrun
// was told to stop while it waited. The first start rechecks every
// Preflight.Interval for at most Preflight.Wait and then fails with a
// *PreflightError; a restart waits as long as it takes, on the restart
// backoff, because a service under a restart policy is meant to come back
// once memory does.
func (s *supervisor) preflight(restart bool, backoff *Backoff) (bool, error) {
	p := s.cfg.Preflight
	if p.Need == 0 {
		return true, nil
	}
	avail, interval := p.Avail, p.Interval
	if avail == nil {
		avail = MemAvailable
	}
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	var waited time.Duration
	for {
		a, err := avail()
		if err != nil {
			return false, fmt.Errorf("preflight: read MemAvailable: %w", err)
		}
		if a >= p.Need {
			return true, nil
		}
		// A first start's wait is --preflight-wait and leaves the
		// restart backoff as it is; a restart's steps along it.
		var delay, told time.Duration
		if restart {
			delay = backoff.Next(0)
			told = delay
		} else {
			if waited >= p.Wait {
				s.em.emit(Event{Kind: PreflightFailed, Available: a, Need: p.Need})
				return false, &PreflightError{Need: p.Need, Available: a, Waited: waited}
			}
			delay, told = min(interval, p.Wait-waited), p.Wait
		}
		if waited == 0 {
			s.em.emit(Event{Kind: PreflightWait, Available: a, Need: p.Need, Delay: told, Restarts: s.restarts})
		}
		if !s.wait(delay) {
			return false, nil
		}
		waited += delay
	}
}

// wait sleeps between children: false when TERM or INT (or the context)
// ended it, and no new child is to be started, even when the stop came in
// before the wait or together with its end (a zero backoff). Orphans are
// reaped meanwhile; other signals have no child to go to.
func (s *supervisor) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return !s.stopPending()
		case <-s.ctx.Done():
			return s.stopping()
		case sig := <-s.sigs:
			if s.handleIdle(sig) {
				return s.stopping()
			}
		case req := <-s.cfg.Control:
			switch stop, now := s.requestIdle(req); {
			case stop:
				return s.stopping()
			case now:
				return !s.stopPending()
			}
		}
	}
}

// stopPending reports a stop that is already asked for, without waiting;
// Stopping is told when there is one.
func (s *supervisor) stopPending() bool {
	for {
		select {
		case <-s.ctx.Done():
			return !s.stopping()
		case sig := <-s.sigs:
			if s.handleIdle(sig) {
				return !s.stopping()
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
		s.halt = sig.(unix.Signal)
		return true
	case unix.SIGCHLD:
		if s.cfg.Init {
			reap(-1, true)
		}
	}
	return false
}

// stopping tells that guardrun was asked to stop; it is always false, for
// wait to return.
func (s *supervisor) stopping() bool {
	s.em.emit(Event{Kind: Stopping, Restarts: s.restarts})
	return false
}
