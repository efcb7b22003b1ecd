// Package supervise owns a guarded run's process lifecycle: the preflight
// guard, starting the child inside its cgroup, forwarding signals, the stop
// sequence (stop signal, then the whole group killed at the timeout),
// reaping, and telling why the child ended.
//
// It leaves the kernel's side (creating the group, limits, counters) to
// package cgroup, and the command line and user-facing wording to main.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
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
	Preflight   Preflight
	// Init makes guardrun a child subreaper that reaps every orphan, as an
	// init must (PID 1 in a container). Off in tests that share a process.
	Init bool
	Log  *slog.Logger
	// Stdin, Stdout, Stderr default to guardrun's own, passed untouched.
	Stdin, Stdout, Stderr *os.File
	Env                   []string
}

// forwarded are the signals passed on to the child, as tini does.
var forwarded = []os.Signal{
	unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGCONT,
}

// Run starts the command in its group and supervises it to the end. The
// error is guardrun's own failure (no group, no child); everything the
// child did is in Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Preflight.Check(ctx); err != nil {
		return nil, err
	}
	g, err := cgroup.Open(cgroup.Options{Name: cfg.Name, Backend: cfg.Backend, Limits: cfg.Limits})
	if errors.Is(err, cgroup.ErrBusy) && cfg.UniqueName {
		cfg.Name = fmt.Sprintf("%s-%d", cfg.Name, os.Getpid())
		g, err = cgroup.Open(cgroup.Options{Name: cfg.Name, Backend: cfg.Backend, Limits: cfg.Limits})
	}
	if err != nil {
		return nil, err
	}
	defer g.Remove()
	if why := cgroup.NoCgroupReason(g); why != "" {
		log.Warn("no cgroup: the ceiling is enforced best-effort by sampling RSS, and a fast leak can overshoot it", "run", cfg.Name, "why", why)
	}
	if cfg.Init {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("become a child subreaper: %w", err)
		}
	}

	// Signals are caught before the child exists so none is lost between
	// its start and the loop.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, append([]os.Signal{unix.SIGCHLD}, forwarded...)...)
	defer signal.Stop(sigs)

	cmd, tty := command(cfg)
	started := time.Now()
	if err := g.Start(cmd); err != nil {
		return nil, &StartError{Command: cfg.Command[0], Err: err}
	}
	log.Info("started", "run", cfg.Name, "pid", cmd.Process.Pid, "cgroup", g.Backend(), "path", g.Path(), "max", cfg.Limits.Max)

	r := &Result{Name: cfg.Name, Backend: g.Backend(), Path: g.Path(), Pid: cmd.Process.Pid}
	r.Status, r.Stopped, r.Forced = loop(ctx, cfg, g, cmd.Process, sigs, log)
	r.Duration = time.Since(started)
	if tty >= 0 {
		reclaimTTY(tty)
	}
	// Counters are read before the group goes: removing it loses them.
	r.Stats, err = g.Stats()
	if err != nil {
		log.Warn("read cgroup counters", "run", cfg.Name, "err", err)
	}
	r.classify()
	// The child is gone; what it left behind in its group goes with it.
	if err := g.Remove(); err != nil {
		log.Warn("remove cgroup", "run", cfg.Name, "path", g.Path(), "err", err)
	}
	log.Info("exited", "run", cfg.Name, "pid", r.Pid, "cause", r.Cause, "code", r.ExitCode, "peak", r.Stats.Peak, "oom_kills", r.Stats.OOMKills)
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
		Pdeathsig: unix.SIGKILL,
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

// loop is tini's wait_and_forward_signal and reap_zombies: it forwards
// signals, runs the stop sequence, reaps, and returns when the child is
// gone.
func loop(ctx context.Context, cfg Config, g cgroup.Group, p *os.Process, sigs chan os.Signal, log *slog.Logger) (status unix.WaitStatus, stopped, forced bool) {
	var deadline <-chan time.Time
	done := ctx.Done()
	stop := func(sig syscall.Signal) {
		if stopped {
			// A second INT or TERM while stopping: the user means it now.
			log.Warn("second stop request: killing the group", "run", cfg.Name)
			forced = true
			g.Kill()
			return
		}
		stopped = true
		signalChild(p, sig, log)
		t := time.NewTimer(cfg.StopTimeout)
		deadline = t.C
	}
	for {
		if st, ok := reap(p.Pid, cfg.Init); ok {
			return st, stopped, forced
		}
		select {
		case sig := <-sigs:
			switch sig {
			case unix.SIGCHLD:
			case unix.SIGTERM:
				stop(stopSignal(cfg))
			case unix.SIGINT:
				stop(unix.SIGINT)
			default:
				signalChild(p, sig.(syscall.Signal), log)
			}
		case <-done:
			done = nil
			stop(stopSignal(cfg))
		case <-deadline:
			deadline = nil
			log.Warn("stop timeout: killing the group", "run", cfg.Name, "timeout", cfg.StopTimeout)
			forced = true
			if err := g.Kill(); err != nil {
				log.Error("kill group", "run", cfg.Name, "err", err)
			}
		}
	}
}

func stopSignal(cfg Config) syscall.Signal {
	if cfg.StopSignal == 0 {
		return unix.SIGTERM
	}
	return cfg.StopSignal
}

func signalChild(p *os.Process, sig os.Signal, log *slog.Logger) {
	if err := p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		log.Warn("forward signal", "pid", p.Pid, "signal", sig, "err", err)
	}
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
