package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/guardrun/guardrun/notify"
	"github.com/guardrun/guardrun/observe"
	"github.com/guardrun/guardrun/supervise"
	"github.com/urfave/cli/v2"
)

// notifyFlags are shared by a run and `guardrun notify-test`.
func notifyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "notify", Usage: "send notifications to `URL` (repeatable): http(s):// JSON or a Slack webhook; FORMAT+URL sets one target's format: json+https://..., slack+https://..., alertmanager+http(s)://host:port. Critical ones not delivered are kept in --state-dir (pending/NAME) and retried until they are, by a later run of the name too", EnvVars: env("notify")},
		&cli.StringFlag{Name: "notify-format", Usage: "`FORMAT` of the --notify targets without a FORMAT+ prefix: json or slack (default: slack for hooks.slack.com, json for others)", EnvVars: env("notify-format")},
		&cli.StringSliceFlag{Name: "notify-exec", Usage: "run `CMD` (sh -c) with each notification's JSON on stdin (repeatable)", EnvVars: env("notify-exec")},
		&cli.DurationFlag{Name: "dedup-window", Value: 10 * time.Minute, Usage: "fold repeats of an incident into one summary per `DUR`", EnvVars: env("dedup-window")},
	}
}

// notifySettings are the validated notification flags.
type notifySettings struct {
	sinks  []notify.Sink
	window time.Duration
	// stateDir keeps the critical notifications not delivered yet, under
	// pending/NAME ("": none are kept).
	stateDir string
}

func loadNotify(c *cli.Context) (notifySettings, error) {
	ns := notifySettings{window: c.Duration("dedup-window")}
	if ns.window <= 0 {
		return ns, usageError("--dedup-window must be positive", "use a duration like 10m")
	}
	format := c.String("notify-format")
	if format != "" && format != "json" && format != "slack" {
		return ns, usageError("--notify-format "+format+": unknown format", "use json or slack; give one target its own with FORMAT+URL, e.g. --notify slack+https://hooks.example/x")
	}
	for _, target := range c.StringSlice("notify") {
		s, err := notify.ParseSink(target, format, ns.window)
		if err != nil {
			return ns, usageError("--notify "+err.Error(), "use https://... (JSON, or Slack's webhook), FORMAT+https://... (json+, slack+) or alertmanager+http://host:9093; keep secrets out of argv with GUARDRUN_NOTIFY or --config")
		}
		ns.sinks = append(ns.sinks, s)
	}
	for _, cmd := range c.StringSlice("notify-exec") {
		ns.sinks = append(ns.sinks, notify.NewExecSink(cmd))
	}
	ns.stateDir = stateDir(c)
	return ns, nil
}

// notifier is a run's notifications, an observer of its events; with no
// target it does nothing.
type notifier struct {
	n    *notify.Notifier
	kept *notify.Kept
}

// startNotifier starts a run's notifications, to be closed at its end.
func startNotifier(ns notifySettings, cfg supervise.Config) *notifier {
	if len(ns.sinks) == 0 {
		return &notifier{}
	}
	host, _ := os.Hostname()
	var kept *notify.Kept
	if ns.stateDir != "" {
		kept = openKept(ns.stateDir, cfg.Name, cfg.Log)
	}
	n := notify.New(notify.Config{Sinks: ns.sinks, Window: ns.window, Host: host, Command: notify.RedactArgs(cfg.Command), Log: cfg.Log, Kept: kept})
	return &notifier{n: n, kept: kept}
}

func (n *notifier) Observe(e supervise.Event) {
	if n.n != nil {
		n.n.Observe(e)
	}
}

// close flushes what is queued within a short deadline.
func (n *notifier) close() {
	if n.n == nil {
		return
	}
	n.n.Close(5 * time.Second)
	if n.kept != nil {
		n.kept.Close()
	}
}

// openKept makes the run's pending directory (0700: the notifications
// carry the command line and the diagnosis), checks it and the ones above
// it as the state directory is checked, and opens it. Without it critical
// notifications are still sent, only not kept: said once, and supervision
// goes on.
func openKept(stateDir, name string, log *slog.Logger) *notify.Kept {
	dir := notify.KeptDir(stateDir, name)
	err := observe.PrepareStateDir(stateDir)
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err != nil {
			break
		}
		if err = os.Mkdir(d, 0o700); errors.Is(err, fs.ErrExist) {
			err = nil
		}
		if err == nil {
			err = observe.PrepareStateDir(d)
		}
	}
	var k *notify.Kept
	if err == nil {
		k, err = notify.OpenKept(dir)
	}
	if err != nil {
		log.Warn("notify: critical notifications that cannot be delivered will not be kept for a later run", "err", err)
		return nil
	}
	return k
}

// notifyTest sends one sample notification to each sink and says how it
// went, so a user can check a hook before an incident does.
func notifyTest(c *cli.Context, stdout io.Writer) (int, error) {
	ns, err := loadNotify(c)
	if err != nil {
		return 0, err
	}
	if len(ns.sinks) == 0 {
		return 0, usageError("no --notify or --notify-exec to test", "guardrun notify-test --notify https://hooks.example/x")
	}
	host, _ := os.Hostname()
	now := time.Now()
	sample := notify.Notification{
		Schema: notify.Schema, Host: host, Run: "notify-test", Command: []string{"guardrun", "notify-test"},
		Kind: "test", Status: notify.Firing, Severity: notify.Info, Count: 1, FirstSeen: now, LastSeen: now,
		Message: "guardrun notify-test: if you can read this, notifications from " + host + " reach you",
	}
	code := 0
	for _, s := range ns.sinks {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.Send(ctx, sample)
		cancel()
		if err != nil {
			fmt.Fprintf(stdout, "%s: failed: %v\n", s.Name(), err)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "%s: delivered\n", s.Name())
	}
	return code, nil
}
