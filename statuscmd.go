package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/observe"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func statusCommand(stdout, stderr io.Writer, code *int) *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "list the guarded runs on this host, or show one",
		ArgsUsage: "[NAME]  (flags come before NAME)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON: the run's state, or a list of them"},
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "refresh in place until interrupted"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "refresh every `DUR` with --watch"},
			&cli.StringFlag{Name: "state-dir", Usage: "read state files from `DIR` (default: where guardrun writes them)", EnvVars: env("state-dir")},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageError("status takes at most one NAME", "guardrun status, or guardrun status NAME --json")
			}
			if c.Bool("watch") && c.Duration("interval") < 100*time.Millisecond {
				return usageError(fmt.Sprintf("--interval %s: must be at least 100ms", c.Duration("interval")), "use a duration like 1s")
			}
			dirs := statusDirs(c.String("state-dir"))
			show := func() error {
				return status(stdout, stderr, dirs, c.Args().First(), c.Bool("json"), time.Now())
			}
			if !c.Bool("watch") {
				if err := show(); err != nil {
					*code = 1
					return err
				}
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
			defer stop()
			t := time.NewTicker(c.Duration("interval"))
			defer t.Stop()
			for {
				// Home, then clear to the end: the table is redrawn in
				// place, as watch(1) does, without a flicker of blank.
				fmt.Fprint(stdout, "\x1b[H")
				err := show()
				fmt.Fprint(stdout, "\x1b[J")
				if err != nil {
					fmt.Fprintf(stdout, "%s\n", err)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		},
	}
}

// statusDirs are the state directories to read: the one asked for, or
// this user's own; root also reads every user's runtime directory, so
// `guardrun status` as root lists every run on the host.
func statusDirs(dir string) []string {
	if dir != "" {
		return []string{dir}
	}
	dirs := []string{}
	if d := observe.DefaultStateDir(); d != "" {
		dirs = append(dirs, d)
	}
	if os.Geteuid() == 0 {
		users, _ := filepath.Glob("/run/user/*/guardrun")
		dirs = append(dirs, users...)
	}
	return dirs
}

// status prints the runs in dirs (or the one named) as a table or JSON.
// State files left by a guardrun that is gone (SIGKILL, power loss) are
// removed and said once on stderr.
func status(stdout, stderr io.Writer, dirs []string, name string, asJSON bool, now time.Time) error {
	listed, err := observe.List(dirs...)
	if err != nil {
		return err
	}
	var live []observe.State
	for _, l := range listed {
		if l.Stale {
			if observe.Clean(l) == nil {
				fmt.Fprintf(stderr, "guardrun: removed the state of %s: its guardrun (pid %d) is gone\n", l.State.Run, l.State.Guardrun)
			}
			continue
		}
		if name == "" || l.State.Run == name {
			live = append(live, observe.Live(l.State))
		}
	}
	if name != "" && len(live) == 0 {
		return &userError{msg: "no guarded run named " + name, code: 1,
			hints: []string{"guardrun status lists the runs; a run started by another user is in their $XDG_RUNTIME_DIR/guardrun"}}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if name != "" {
			return enc.Encode(live[0])
		}
		if live == nil {
			live = []observe.State{}
		}
		return enc.Encode(live)
	}
	if len(live) == 0 {
		fmt.Fprintln(stdout, "no guarded runs")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPID\tMEMORY\tPEAK\tRESTARTS\tUPTIME\tSTATE\tLAST EVENT")
	for _, st := range live {
		pid := "-"
		if st.Pid != 0 {
			pid = fmt.Sprint(st.Pid)
		}
		since := st.Started
		if st.Pid != 0 {
			since = st.ChildStarted
		}
		last := ""
		if n := len(st.Last); n > 0 {
			m := st.Last[n-1]
			last = fmt.Sprintf("%s %s ago", m.Message, fmtAge(now.Sub(m.T)))
		}
		if n := st.PendingNotifications; n > 0 {
			// Critical alerts not delivered yet: what a person must
			// know before the rest of the line.
			last = fmt.Sprintf("%d critical %s not delivered yet; %s", n, map[bool]string{true: "alert", false: "alerts"}[n == 1], last)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", st.Run, pid, memoryCell(st),
			cgroup.FormatSize(st.Peak), restartsCell(st), fmtAge(now.Sub(since)), st.Phase, last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if name != "" && live[0].LastRestart != nil {
		fmt.Fprintln(stdout, lastRestartLine(live[0], now))
	}
	return nil
}

// restartsCell is the count and what made the last restart: "3 (asked)",
// "1 (oom_kill)", "0".
func restartsCell(st observe.State) string {
	if st.LastRestart == nil || st.Restarts == 0 {
		return fmt.Sprint(st.Restarts)
	}
	return fmt.Sprintf("%d (%s)", st.Restarts, st.LastRestart.Why)
}

// lastRestartLine says, under one run's table, how it was last restarted
// and by what: "last restart: 12s ago, asked by uid 0 pid 4242
// (guardrun); pid 123 ended with status 143".
func lastRestartLine(st observe.State, now time.Time) string {
	lr := st.LastRestart
	s := fmt.Sprintf("last restart: %s ago, %s", fmtAge(now.Sub(lr.T)), lr.Message)
	if lr.Pid != 0 {
		s += fmt.Sprintf("; pid %d ended with status %d", lr.Pid, lr.ExitCode)
	}
	return s
}

// memoryCell is "working set 180 MiB / 512 MiB [███░░░░░░░] 35%, usage
// 500 MiB": the bar is the working set's, which is what reaches the
// ceiling (the kernel reclaims page cache first), and usage, cache
// included, follows. Without a working set (no cgroup, where both are
// RSS, or a state file from an older guardrun) it is usage alone, "212
// MiB / 512 MiB [████░░░░░░] 41%"; without a ceiling, the figures alone.
func memoryCell(st observe.State) string {
	size := cgroup.FormatSize
	cur, label, usage := st.Current, "", ""
	if ws := st.WorkingSet; ws != 0 && (ws != st.Current || st.Cache != 0) {
		cur, label, usage = ws, "working set ", ", usage "+size(st.Current)
	}
	if st.Ceiling == 0 {
		return label + size(cur) + usage
	}
	const width = 10
	fill := min(int(cur*width/st.Ceiling), width)
	return fmt.Sprintf("%s%s / %s [%s%s] %d%%%s", label, size(cur), size(st.Ceiling),
		strings.Repeat("█", fill), strings.Repeat("░", width-fill), cur*100/st.Ceiling, usage)
}

// fmtAge is a duration as people read an age: 45s, 12m, 3h, 2d.
func fmtAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
