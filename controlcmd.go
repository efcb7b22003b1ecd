package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/observe"
	"github.com/guardrun/guardrun/supervise"
	"github.com/urfave/cli/v2"
)

// Exit codes of restart, stop and signal: 0 done; 1 no such run, or it
// could not do it (in time); 4 refused: the caller is neither the run's
// user nor root; 125 bad input.
const exitRefused = 4

// controlWait is how long restart and stop wait, by default, for the run
// to say it is done: the run's --stop-timeout (10s by default) and a
// start, with room to spare.
const controlWait = time.Minute

func controlFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "state-dir", Usage: "find the run's control socket in `DIR` (default: where guardrun puts it)", EnvVars: env("state-dir")},
		&cli.DurationFlag{Name: "timeout", Value: controlWait, Usage: "wait at most `DUR` for the run to say it is done"},
	}
}

// restartCommand is `guardrun restart NAME`.
func restartCommand(stdout, stderr io.Writer, code *int) *cli.Command {
	return &cli.Command{
		Name:      "restart",
		Usage:     "restart a run's child gracefully: its stop signal, then a new child at once (no backoff, not counted toward --max-restarts)",
		ArgsUsage: "NAME",
		Flags:     controlFlags(),
		Action: func(c *cli.Context) error {
			return controlAction(c, stdout, code, controlRequest{Action: string(supervise.ActionRestart)})
		},
	}
}

// stopCommand is `guardrun stop NAME`.
func stopCommand(stdout, stderr io.Writer, code *int) *cli.Command {
	return &cli.Command{
		Name:      "stop",
		Usage:     "stop a run as a TERM to its guardrun does, and wait for it to end",
		ArgsUsage: "NAME",
		Flags:     controlFlags(),
		Action: func(c *cli.Context) error {
			return controlAction(c, stdout, code, controlRequest{Action: string(supervise.ActionStop)})
		},
	}
}

// signalCommand is `guardrun signal NAME SIG`.
func signalCommand(stdout, stderr io.Writer, code *int) *cli.Command {
	return &cli.Command{
		Name:      "signal",
		Usage:     "send a signal to a run's child (its main process)",
		ArgsUsage: "NAME SIG",
		Flags:     controlFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usageError("signal takes a NAME and a SIG", "guardrun signal api USR1")
			}
			sig, err := supervise.ParseSignal(c.Args().Get(1))
			if err != nil {
				return usageError("signal: "+err.Error(), "use a name like HUP, USR1, USR2 or a number")
			}
			return controlAction(c, stdout, code, controlRequest{Action: string(supervise.ActionSignal), Signal: fmt.Sprint(int(sig))})
		},
	}
}

// controlAction finds the run named by the first argument, sends it req
// and prints what it answers.
func controlAction(c *cli.Context, stdout io.Writer, code *int, req controlRequest) error {
	verb := c.Command.Name
	if req.Action != string(supervise.ActionSignal) && c.NArg() != 1 {
		return usageError(verb+" takes one NAME", "guardrun "+verb+" api; guardrun status lists the runs")
	}
	name := c.Args().First()
	if c.String("state-dir") == "off" {
		return usageError("--state-dir off: a run has its control socket in its state directory, and there is none",
			"give the run's --state-dir, or leave it out for the default")
	}
	if c.Duration("timeout") <= 0 {
		return usageError(fmt.Sprintf("--timeout %s: must be positive", c.Duration("timeout")), "use a duration like 1m")
	}
	path, err := findControl(statusDirs(c.String("state-dir")), name)
	if err != nil {
		*code = 1
		return err
	}
	reply, err := askControl(path, name, req, c.Duration("timeout"))
	if err != nil {
		var ue *userError
		if errors.As(err, &ue) {
			*code = ue.code
		}
		return err
	}
	fmt.Fprintln(stdout, reply)
	return nil
}

// findControl is the control socket of the live run named name in dirs.
func findControl(dirs []string, name string) (string, error) {
	if err := validRunName(name); err != nil {
		return "", err
	}
	for _, dir := range dirs {
		p := controlPath(dir, name)
		if fi, err := os.Lstat(p); err == nil && fi.Mode().Type() == fs.ModeSocket {
			return p, nil
		}
	}
	// A live run without a socket says why; otherwise it is not running.
	listed, _ := observe.List(dirs...)
	for _, l := range listed {
		if l.State.Run == name && !l.Stale {
			return "", &userError{code: 1, msg: fmt.Sprintf("%s runs (guardrun pid %d) but has no control socket in %s", name, l.State.Guardrun, filepath.Dir(l.Path)),
				hints: []string{"its guardrun said why when it started (\"no control socket\" in its log)", fmt.Sprintf("TERM to guardrun stops it as guardrun stop would: kill -TERM %d", l.State.Guardrun)}}
		}
	}
	return "", &userError{code: 1, msg: "no guarded run named " + name,
		hints: []string{"guardrun status lists the runs; a run started by another user is in their $XDG_RUNTIME_DIR/guardrun",
			"a run started with --state-dir off has no control socket"}}
}

// validRunName refuses a name that is no run's (a path, say) before it
// is joined to a directory.
func validRunName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") {
		return usageError(fmt.Sprintf("%q is not a run's name", name), "guardrun status lists the runs")
	}
	return nil
}

// askControl sends req over the socket at path and reads the replies
// until the last, within wait. The reply is the run's sentence.
func askControl(path, name string, req controlRequest, wait time.Duration) (string, error) {
	conn, err := net.DialTimeout("unix", path, 2*time.Second)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "", &userError{code: 1, msg: fmt.Sprintf("no guarded run named %s: its control socket %s is stale (its guardrun is gone)", name, path),
			hints: []string{"guardrun status lists the runs that are live"}}
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		owner := "another user"
		if fi, err := os.Lstat(path); err == nil {
			owner = fmt.Sprintf("uid %d", fi.Sys().(*syscall.Stat_t).Uid)
		}
		return "", &userError{code: exitRefused, msg: fmt.Sprintf("permission denied: %s belongs to %s", name, owner),
			hints: []string{"only the run's user and root can control it: run this as that user, or with sudo"}}
	case errors.Is(err, fs.ErrNotExist):
		return "", &userError{code: 1, msg: "no guarded run named " + name, hints: []string{"guardrun status lists the runs"}}
	case err != nil:
		return "", &userError{code: 1, msg: fmt.Sprintf("cannot reach %s: %v", name, err)}
	}
	defer conn.Close()
	deadline := time.Now().Add(wait)
	conn.SetDeadline(deadline)
	b, _ := json.Marshal(req)
	// A write that fails is not the end: a run that refused the caller
	// answered and closed before reading, and the answer is there to read.
	_, werr := conn.Write(append(b, '\n'))
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 4096), 64<<10)
	var last string // the latest reply: what was under way when the wait ended
	for sc.Scan() {
		var r controlReply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return "", &userError{code: 1, msg: fmt.Sprintf("%s answered something that is not a reply: %v", name, err)}
		}
		msg := printable(r.Message)
		switch {
		case r.Refused:
			return "", &userError{code: exitRefused, msg: msg, hints: []string{"only the run's user and root can control it"}}
		case !r.OK:
			return "", &userError{code: 1, msg: msg}
		case r.Done:
			return msg, nil
		}
		last = msg
	}
	err = sc.Err()
	if last == "" && werr != nil {
		return "", &userError{code: 1, msg: fmt.Sprintf("cannot reach %s: %v", name, werr)}
	}
	if last == "" {
		return "", &userError{code: 1, msg: fmt.Sprintf("%s did not answer: %v", name, orEOF(err))}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", &userError{code: 1, msg: fmt.Sprintf("%s, but it is not done after %s", last, wait),
			hints: []string{"it may still be under way: guardrun status " + name + " shows how it stands", "wait longer with --timeout 5m"}}
	}
	return "", &userError{code: 1, msg: fmt.Sprintf("%s, but the run closed the connection before it was done", last),
		hints: []string{"guardrun status " + name + " shows how it stands"}}
}

func orEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// printable keeps a reply's words and drops control characters: the
// run's owner writes them, and a root caller's terminal must not take
// escape sequences from another user.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}
