package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/guardrun/guardrun/notify"
	"github.com/guardrun/guardrun/supervise"
	"github.com/urfave/cli/v2"
)

// notifyFlags are shared by a run and `guardrun notify-test`.
func notifyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "notify", Usage: "send notifications to `URL` (repeatable): http(s):// JSON or a Slack webhook, alertmanager+http(s)://host:port", EnvVars: env("notify")},
		&cli.StringFlag{Name: "notify-format", Usage: "`FORMAT` of http(s) --notify targets: json or slack (default: slack for hooks.slack.com)", EnvVars: env("notify-format")},
		&cli.StringSliceFlag{Name: "notify-exec", Usage: "run `CMD` (sh -c) with each notification's JSON on stdin (repeatable)", EnvVars: env("notify-exec")},
		&cli.DurationFlag{Name: "dedup-window", Value: 10 * time.Minute, Usage: "fold repeats of an incident into one summary per `DUR`", EnvVars: env("dedup-window")},
	}
}

// notifySettings are the validated notification flags.
type notifySettings struct {
	sinks  []notify.Sink
	window time.Duration
}

func loadNotify(c *cli.Context) (notifySettings, error) {
	ns := notifySettings{window: c.Duration("dedup-window")}
	if ns.window <= 0 {
		return ns, usageError("--dedup-window must be positive", "use a duration like 10m")
	}
	for _, target := range c.StringSlice("notify") {
		s, err := notify.ParseSink(target, c.String("notify-format"), ns.window)
		if err != nil {
			return ns, usageError("--notify "+err.Error(), "use https://... (JSON, or Slack's webhook), or alertmanager+http://host:9093; keep secrets out of argv with GUARDRUN_NOTIFY or --config")
		}
		ns.sinks = append(ns.sinks, s)
	}
	for _, cmd := range c.StringSlice("notify-exec") {
		ns.sinks = append(ns.sinks, notify.NewExecSink(cmd))
	}
	return ns, nil
}

// startNotifier wires notifications into a run; the returned func flushes
// them at its end, within a short deadline.
func startNotifier(ns notifySettings, cfg *supervise.Config) func() {
	if len(ns.sinks) == 0 {
		return func() {}
	}
	host, _ := os.Hostname()
	n := notify.New(notify.Config{Sinks: ns.sinks, Window: ns.window, Host: host, Command: notify.RedactArgs(cfg.Command), Log: cfg.Log})
	next := cfg.Events
	cfg.Events = func(e supervise.Event) {
		n.Observe(e)
		if next != nil {
			next(e)
		}
	}
	return func() { n.Close(5 * time.Second) }
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
