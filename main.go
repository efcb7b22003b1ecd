// Command guardrun runs a command in its own memory-capped cgroup, forwards
// signals, propagates the exit status, and says plainly when the kernel's
// OOM killer ended it.
//
//	guardrun --max 512M -- node app.js
//
// This file only wires flags to packages cgroup and supervise.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	supervise.MaybeSentinel()
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run is main without os.Exit, so tests can drive it in-process.
func run(args []string, stdout, stderr io.Writer) int {
	// An empty GUARDRUN_X= means unset, as it does for most Unix tools;
	// left in place it would count as set and hide the --config value.
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "GUARDRUN_") && v == "" {
			os.Unsetenv(k)
		}
	}
	code := 0
	app := newApp(stdout, stderr, &code)
	if willRun(app, args) {
		supervise.CatchSignals()
		defer supervise.DropSignals()
	}
	if err := app.Run(args); err != nil {
		return report(stderr, err)
	}
	return code
}

// willRun: the arguments give a command after "--" and no subcommand or
// help before it, so guardrun will run it and can catch its signals while
// it parses its flags (supervise.CatchSignals). A flag's value that reads
// as a subcommand's name only costs that head start; a subcommand that
// lives on (status --watch) must never have its TERM caught.
func willRun(app *cli.App, args []string) bool {
	end := slices.Index(args, "--")
	if end < 1 || end == len(args)-1 {
		return false
	}
	for _, a := range args[1:end] {
		if a == "-h" || a == "--help" || app.Command(a) != nil {
			return false
		}
	}
	return true
}

func newApp(stdout, stderr io.Writer, code *int) *cli.App {
	return &cli.App{
		Name:      "guardrun",
		Usage:     "run a command under a kernel-enforced memory ceiling and say why it died",
		UsageText: "guardrun [flags] -- COMMAND [ARGS...]\nguardrun status [--json] [--watch] [NAME]\nguardrun restart|stop NAME\nguardrun signal NAME SIG\nguardrun check\nguardrun completion bash|zsh|fish\nguardrun man\nguardrun version",
		Description: `Runs COMMAND in its own cgroup (v2, or v1 where the host binds memory there)
with a memory ceiling that covers it and every process it forks. Signals are
forwarded; guardrun exits with the child's status.

Flags also come from --config FILE (TOML, same names as the long flags, e.g.
max = "512M") and from GUARDRUN_* environment variables (GUARDRUN_MAX,
GUARDRUN_STOP_TIMEOUT, ...). The command line wins over the environment, the
environment over the file.

Exit status: the child's own; 128+N when signal N ended it; 137 when the
kernel's OOM killer did; 125 when guardrun itself failed (bad input, no
cgroup, preflight); 126 when COMMAND is not executable; 127 when not found.`,
		Flags:           flags(),
		HideHelpCommand: true,
		Writer:          stdout,
		ErrWriter:       stderr,
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			// A value its flag refused, on the command line or from a
			// GUARDRUN_* variable, says what was wrong and what is taken.
			if ve := flagValueError(flags(), err); ve != nil {
				return ve
			}
			return usageError(err.Error(), "see guardrun --help")
		},
		Action: func(c *cli.Context) error {
			// Here, not in the app's Before, which would run for status
			// and version too.
			command, err := readConfig(c, flags())
			if err != nil {
				return err
			}
			s, err := loadSettings(c, command)
			if err != nil {
				return err
			}
			*code, err = guard(c.Context, s, stderr)
			return err
		},
		Commands: []*cli.Command{
			statusCommand(stdout, stderr, code),
			restartCommand(stdout, stderr, code),
			stopCommand(stdout, stderr, code),
			signalCommand(stdout, stderr, code),
			{
				Name:  "check",
				Usage: "print what this host offers and whether a ceiling can be enforced",
				Action: func(c *cli.Context) error {
					*code = check(stdout)
					return nil
				},
			},
			{
				Name:   "notify-test",
				Usage:  "send a sample notification to each --notify and --notify-exec target",
				Flags:  append(notifyFlags(), configFlag()),
				Before: withConfig(notifyFlags()),
				Action: func(c *cli.Context) error {
					var err error
					*code, err = notifyTest(c, stdout)
					return err
				},
			},
			{
				Name:  "version",
				Usage: "print guardrun's version",
				Action: func(c *cli.Context) error {
					fmt.Fprintf(stdout, "guardrun %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
					return nil
				},
			},
			completionCommand(stdout),
			manCommand(stdout),
		},
	}
}

// guard runs one command and returns guardrun's exit code, in the steps
// tini's main takes: the run's config, its logger, the run prepared (its
// name settled), the observers, the run, its summary, the exit.
func guard(ctx context.Context, s *settings, stderr io.Writer) (int, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	// The held sockets go with the run, on every way out (the unix socket
	// files too); before the exit by the child's signal below as well,
	// where no defer runs.
	defer s.listen.close()
	journal := journalStream()
	log := newLogger(stderr, s.logFormat, s.quiet, journal)

	sd, err := newSystemd(s.notifyReady)
	if err != nil {
		return 0, &userError{msg: err.Error(), code: supervise.ExitInternal}
	}
	defer sd.close()
	cfg := s.supervise
	cfg.Log, cfg.Init, cfg.Sentinel = log, true, true
	cfg.Env = sd.childEnv(cfg.Env)
	requests := make(chan supervise.Request)
	cfg.Control = requests

	sv, err := supervise.Prepare(cfg)
	if err != nil {
		return 0, runError(err, cfg, supervise.ExitInternal)
	}
	cfg.Name = sv.Name()

	notifier := startNotifier(s.notify, cfg)
	rec, err := startObserve(ctx, s.observe, cfg)
	if err != nil {
		sv.Close()
		notifier.close()
		return 0, err
	}
	ctl := startControl(s.observe.stateDir, cfg.Name, requests, log)
	r, runErr := sv.Run(ctx, sd, rec, notifier)
	ctl.close()
	s.listen.close()
	rec.finish(r)
	notifier.close()

	if runErr != nil {
		return 0, runError(runErr, cfg, r.ExitCode)
	}
	summary(stderr, journal, s.quiet, r)
	if r.ExitSignal != 0 {
		// The child ended by the signal guardrun was asked to pass on: end
		// the same way, so a shell still sees 128+N and systemd sees a
		// clean stop (a main process killed by SIGTERM, not exit 143).
		signal.Reset(r.ExitSignal)
		syscall.Kill(os.Getpid(), r.ExitSignal)
		time.Sleep(time.Second) // the signal is on its way; this is a fallback
	}
	return r.ExitCode, nil
}

// summary prints the run's last line: always when it went wrong or was
// cut short, and unless -q otherwise.
func summary(stderr io.Writer, journal, quiet bool, r *supervise.Result) {
	level := 6 // info
	switch {
	case r.Stopped && !r.Asked:
		level = 4 // warning: stopped while no child ran
	case r.OOMKilled() || r.GaveUp != "":
		level = 3 // err
	case quiet:
		return
	}
	fmt.Fprintf(stderr, "%sguardrun: %s\n", prio(journal, level), r.Summary())
}

// runError turns a supervision failure into what the user reads; code is
// the run's exit code (Result.ExitCode).
func runError(err error, cfg supervise.Config, code int) error {
	var pe *supervise.PreflightError
	var se *supervise.StartError
	var de *supervise.DiagDirError
	var sce *cgroup.ScopeError
	var ee *cgroup.EnclosedError
	switch {
	case errors.As(err, &pe):
		return &userError{msg: err.Error() + ": " + cfg.Name + " was not started", code: code,
			hints: []string{"free memory, lower the need with --preflight SIZE, wait for it with --preflight-wait 2m, or turn it off with --preflight off"}}
	case errors.As(err, &se):
		return &userError{msg: err.Error(), code: code, hints: startHints(se)}
	case errors.As(err, &de):
		return &userError{msg: err.Error(), code: code,
			hints: []string{"set TMPDIR to a directory guardrun can write (it makes a private one there, mode 0700, and removes it at the end)", "or turn the heap hint and its reports off with --heap-hint off"}}
	case errors.As(err, &ee):
		return &userError{msg: err.Error(), code: code, hints: []string{ee.Hint()}}
	case errors.As(err, &sce):
		return &userError{msg: sce.Why, code: code, hints: sce.Hints}
	case errors.Is(err, cgroup.ErrBusy):
		return &userError{msg: err.Error(), code: code,
			hints: []string{"another guardrun runs under the name " + cfg.Name + "; give this one its own with --name"}}
	}
	return &userError{msg: err.Error(), code: code,
		hints: []string{"run `guardrun check` to see what this host offers, or force a backend with --cgroup v1|v2|none"}}
}

func startHints(se *supervise.StartError) []string {
	switch se.ExitCode() {
	case supervise.ExitNotFound:
		return []string{"check the command's spelling and $PATH"}
	case supervise.ExitNotExec:
		return []string{"check that " + se.Command + " is a program with execute permission"}
	}
	return nil
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// userError is what guardrun prints when it fails: one error line, then one
// hint line per fix, and its exit code.
type userError struct {
	msg   string
	hints []string
	code  int
}

func (e *userError) Error() string { return e.msg }

func usageError(msg string, hints ...string) error {
	return &userError{msg: msg, hints: hints, code: supervise.ExitInternal}
}

func report(w io.Writer, err error) int {
	var ue *userError
	if !errors.As(err, &ue) {
		ue = &userError{msg: err.Error(), code: supervise.ExitInternal}
	}
	journal := journalStream()
	fmt.Fprintf(w, "%sguardrun: error: %s\n", prio(journal, 3), ue.msg)
	for _, h := range ue.hints {
		fmt.Fprintf(w, "%sguardrun: hint: %s\n", prio(journal, 5), h)
	}
	return ue.code
}
