package supervise

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"time"
)

// This file is how a live run takes a person's word (guardrun restart,
// stop, signal NAME, through main's control socket) and its own schedule
// (--restart-every): requests come in as data on Config.Control and are
// handled on the supervisor's goroutine, in the child's select loop and
// while no child runs, each told as an event.

// Action is what a control request asks of a run.
type Action string

const (
	ActionRestart Action = "restart" // a graceful restart of the child
	ActionStop    Action = "stop"    // the same stop as a TERM to guardrun
	ActionSignal  Action = "signal"  // a signal to the child
)

// Peer is who asked: the caller of the control socket as the kernel names
// it (SO_PEERCRED) and its command (/proc/PID/comm).
type Peer struct {
	Uid     uint32
	Pid     int
	Command string
}

// Request is one control request. Reply gets the run's answers and must
// hold two (the run never waits on it): one at once, and for a restart or
// a stop that is under way a second, the last (Done), when it is done.
type Request struct {
	Action Action
	Signal syscall.Signal // ActionSignal
	By     Peer
	Reply  chan Reply
}

// Reply is the run's answer to a Request.
type Reply struct {
	Action   Action
	Run      string
	Pid      int            // the child acted on; 0 when none ran
	NewPid   int            // restart: the child started in its place
	Signal   syscall.Signal // signal: the one sent
	ExitCode int            // stop: what guardrun exits with
	Done     bool           // the last answer
	Err      error          // refused or failed; Done is set
}

// Errors a request is answered with.
var (
	ErrStopping = errors.New("it is stopping")
	ErrNoChild  = errors.New("no child runs now")
)

// pendingRestart is an asked restart waiting for the next child.
type pendingRestart struct {
	req Request
	pid int // the child it stopped; 0 when none ran
}

func (s *supervisor) answer(req Request, r Reply) {
	r.Action, r.Run = req.Action, s.cfg.Name
	if r.Err != nil {
		r.Done = true
	}
	select {
	case req.Reply <- r:
	default: // a reply channel too small is the caller's bug; never block the run
	}
}

// request handles a control request while a child runs. A restart takes
// the path of a memory restart's stop (the stop signal, the group killed
// at the stop timeout) with ReasonAsked, and is answered once the next
// child runs; a restart asked while guardrun restarts the child already
// is answered with that one.
func (c *child) request(req Request) {
	by := req.By
	switch req.Action {
	case ActionSignal:
		c.em.emit(Event{Kind: SignalAsked, Pid: c.p.Pid, Signal: signalName(req.Signal), By: &by, Restarts: c.restarts})
		err := c.p.Signal(req.Signal)
		if errors.Is(err, os.ErrProcessDone) {
			err = ErrNoChild
		}
		c.answer(req, Reply{Pid: c.p.Pid, Signal: req.Signal, Done: true, Err: err})
	case ActionStop:
		c.em.emit(Event{Kind: StopAsked, Pid: c.p.Pid, By: &by, Restarts: c.restarts})
		c.stop(stopSignal(c.cfg), "")
		c.answer(req, Reply{Pid: c.p.Pid})
		c.stops = append(c.stops, req)
	case ActionRestart:
		if c.r.Asked {
			c.answer(req, Reply{Pid: c.p.Pid, Err: ErrStopping})
			return
		}
		c.em.emit(Event{Kind: RestartAsked, Pid: c.p.Pid, By: &by, Restarts: c.restarts})
		c.asked = append(c.asked, pendingRestart{req: req, pid: c.p.Pid})
		c.answer(req, Reply{Pid: c.p.Pid})
		if !c.busy() {
			c.restartChild(ReasonAsked)
		}
	default:
		c.answer(req, Reply{Err: fmt.Errorf("unknown action %q", req.Action)})
	}
}

// restartChild stops the child to start it again at once: an asked or
// a scheduled restart, by the stop of --restart-at (without its
// evidence: nothing is wrong with the child).
func (c *child) restartChild(reason string) {
	c.stop(stopSignal(c.cfg), reason)
}

// scheduled is the --restart-every timer firing.
func (c *child) scheduled() {
	if c.busy() {
		return // stopping or restarting already
	}
	ran := time.Since(c.started)
	c.em.emit(Event{Kind: RestartScheduled, Pid: c.p.Pid, Restarts: c.restarts, Uptime: ran,
		Detail: fmt.Sprintf("it ran %s, --restart-every %s", fmtDuration(ran), c.cfg.RestartEvery)})
	c.restartChild(ReasonScheduled)
}

// answerRestarts tells the asked restarts that the new child runs.
func (c *child) answerRestarts() {
	for _, p := range c.asked {
		c.answer(p.req, Reply{Pid: p.pid, NewPid: c.p.Pid, Done: true})
	}
	c.asked = nil
}

// requestIdle handles a control request while no child runs (a backoff,
// a preflight wait): true when it asks to stop, and now when it asks for
// the child at once, the backoff cut short.
func (s *supervisor) requestIdle(req Request) (stop, now bool) {
	by := req.By
	switch req.Action {
	case ActionSignal:
		s.answer(req, Reply{Err: ErrNoChild})
	case ActionStop:
		s.em.emit(Event{Kind: StopAsked, By: &by, Restarts: s.restarts})
		s.answer(req, Reply{})
		s.stops = append(s.stops, req)
		return true, false
	case ActionRestart:
		s.em.emit(Event{Kind: RestartAsked, By: &by, Restarts: s.restarts})
		s.answer(req, Reply{})
		s.asked = append(s.asked, pendingRestart{req: req})
		return false, true
	default:
		s.answer(req, Reply{Err: fmt.Errorf("unknown action %q", req.Action)})
	}
	return false, false
}

// answerEnd answers what is still waiting when the run ends: the stops
// with guardrun's exit code, the restarts with why there is no new child.
func (s *supervisor) answerEnd(r *Result) {
	for _, req := range s.stops {
		s.answer(req, Reply{ExitCode: r.ExitCode, Done: true})
	}
	s.stops = nil
	for _, p := range s.asked {
		s.answer(p.req, Reply{Pid: p.pid, Err: fmt.Errorf("the run ended before a new child started: %s", r.Summary())})
	}
	s.asked = nil
}

// askedBy is who asked for the restart that is under way, nil for none.
func (s *supervisor) askedBy() *Peer {
	if len(s.asked) == 0 {
		return nil
	}
	by := s.asked[0].req.By
	return &by
}

// everyJitter is how much earlier than --restart-every a scheduled restart
// may come: up to 5%, drawn per child, so many services started together
// do not restart together, and none later than it asked (as the backoff
// never waits longer than its schedule). A day's schedule spreads over
// the 72 minutes before it.
const everyJitter = 0.05

// scheduleDelay is when the child is restarted on the schedule: every
// less up to everyJitter of it, draw giving a number in [0, 1).
func scheduleDelay(every time.Duration, draw func() float64) time.Duration {
	if draw == nil {
		draw = rand.Float64
	}
	return every - time.Duration(draw()*everyJitter*float64(every))
}

// planned reports a restart guardrun makes because it was asked or
// scheduled: not a failure, so no backoff and no count toward
// --max-restarts.
func (r *Result) planned() bool { return r.Reason == ReasonAsked || r.Reason == ReasonScheduled }
