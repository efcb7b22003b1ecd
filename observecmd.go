package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/guardrun/guardrun/notify"
	"github.com/guardrun/guardrun/observe"
	"github.com/guardrun/guardrun/supervise"
	"github.com/urfave/cli/v2"
)

// observeFlags are the flags that show a run: its state file, report,
// chart, metrics and the sampling behind them.
func observeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "sample", Value: time.Second, Usage: "sample the group's memory every `DUR` when something uses it (--notify, --report, --chart, --metrics-*); 0: never", EnvVars: env("sample")},
		&cli.DurationFlag{Name: "leak-window", Value: 5 * time.Minute, Usage: "raise leak_suspected when usage grows steadily over `DUR` of samples; 0: off", EnvVars: env("leak-window")},
		&cli.StringFlag{Name: "state-dir", Usage: "keep the run's state file, which guardrun status reads, in `DIR` (default /run/guardrun, or $XDG_RUNTIME_DIR/guardrun; off: none)", EnvVars: env("state-dir")},
		&cli.StringFlag{Name: "report", Usage: "write the whole run as JSON to `FILE` when it ends", EnvVars: env("report")},
		&cli.StringFlag{Name: "chart", Usage: "draw memory over time to `FILE` (.svg or .png) when the run ends, with guardrun-chart (beside guardrun or on $PATH)", EnvVars: env("chart")},
		&cli.StringFlag{Name: "metrics-addr", Usage: "serve Prometheus metrics on `ADDR` (loopback, e.g. 127.0.0.1:9464)", EnvVars: env("metrics-addr")},
		&cli.BoolFlag{Name: "metrics-remote", Usage: "allow a --metrics-addr that is not loopback", EnvVars: env("metrics-remote")},
		&cli.StringFlag{Name: "metrics-textfile", Usage: "write the metrics to `PATH` (.prom) for node_exporter's textfile collector, at each sample", EnvVars: env("metrics-textfile")},
	}
}

// observeSettings are the validated observe flags.
type observeSettings struct {
	sample, leakWindow time.Duration
	explicitSample     bool
	explicitLeak       bool // --leak-window asked for: the forecast needs samples
	stateDir           string
	report, chart      string
	metricsAddr        string
	metricsRemote      bool
	textfile           string
}

func loadObserve(c *cli.Context) (observeSettings, error) {
	o := observeSettings{sample: c.Duration("sample"), explicitSample: c.IsSet("sample"), leakWindow: c.Duration("leak-window"),
		explicitLeak: c.IsSet("leak-window") && c.Duration("leak-window") > 0,
		report:       c.String("report"), chart: c.String("chart"), metricsAddr: c.String("metrics-addr"),
		metricsRemote: c.Bool("metrics-remote"), textfile: c.String("metrics-textfile")}
	if o.sample < 0 || (o.sample > 0 && o.sample < 10*time.Millisecond) {
		return o, usageError(fmt.Sprintf("--sample %s: must be 0 or at least 10ms", o.sample), "use a duration like 1s; 0 turns sampling off")
	}
	if o.leakWindow < 0 || (o.leakWindow > 0 && o.sample > 0 && o.leakWindow < 10*o.sample) {
		return o, usageError(fmt.Sprintf("--leak-window %s: must be 0 or at least 10 samples (--sample %s)", o.leakWindow, o.sample), "use a duration like 5m; 0 turns the leak forecast off")
	}
	o.stateDir = stateDir(c)
	for flag, p := range map[string]string{"report": o.report, "chart": o.chart, "metrics-textfile": o.textfile} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(filepath.Dir(p)); err != nil || !fi.IsDir() {
			return o, usageError(fmt.Sprintf("--%s %s: no directory %s", flag, p, filepath.Dir(p)), "create the directory first, or write the file somewhere that exists")
		}
	}
	if o.chart != "" {
		if _, err := observe.ChartFormat(o.chart); err != nil {
			return o, usageError("--chart "+err.Error(), "name the file .svg or .png")
		}
		if _, err := findChartHelper(); err != nil {
			return o, usageError("--chart "+o.chart+": guardrun-chart is not installed",
				"install it beside guardrun: go build -o /usr/local/bin/guardrun-chart ./cmd/guardrun-chart")
		}
	}
	if o.textfile != "" && filepath.Ext(o.textfile) != ".prom" {
		return o, usageError("--metrics-textfile "+o.textfile+": node_exporter reads only *.prom files", "name it like /var/lib/node_exporter/textfile/guardrun.prom")
	}
	if o.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(o.metricsAddr); err != nil {
			return o, usageError("--metrics-addr "+o.metricsAddr+": "+err.Error(), "use HOST:PORT, e.g. 127.0.0.1:9464")
		}
	}
	return o, nil
}

// stateDir is the run's state directory from --state-dir: the default
// for "", none for off. The state file and the kept notifications go there.
func stateDir(c *cli.Context) string {
	switch d := c.String("state-dir"); d {
	case "off":
		return ""
	case "":
		return observe.DefaultStateDir()
	default:
		return d
	}
}

// wantsSamples reports whether anything consumes samples. Without a
// consumer guardrun does not wake up to sample at all: status and metrics
// read the live figures from the group when asked.
func (o observeSettings) wantsSamples(notifying bool) bool {
	return o.explicitSample || o.explicitLeak || notifying || o.report != "" || o.chart != "" || o.metricsAddr != "" || o.textfile != ""
}

// stateDelay is how long a run's state file is held back (the sentinel's
// delay, for the same reason: most of a short command's cost).
const stateDelay = 100 * time.Millisecond

// observation is a run's recorder and the files it writes, an observer
// of the run's events.
type observation struct {
	o       observeSettings
	rec     *observe.Recorder
	metrics *observe.Metrics
	cancel  context.CancelFunc
	served  <-chan error
}

// startObserve starts recording a run. It fails (and nothing is started)
// only on what the user must fix: a metrics address that cannot be
// served. Files that cannot be written are reported once, and supervision
// goes on. finish writes the run's files at its end.
func startObserve(ctx context.Context, o observeSettings, cfg supervise.Config) (*observation, error) {
	dir := o.stateDir
	if dir != "" {
		if err := observe.PrepareStateDir(dir); err != nil {
			cfg.Log.Warn("no state file: `guardrun status` will not show this run", "err", err)
			dir = ""
		}
	}
	host, _ := os.Hostname()
	var pending func() int
	if o.stateDir != "" {
		kept := notify.KeptDir(o.stateDir, cfg.Name)
		pending = func() int { return notify.CountKept(kept) }
	}
	rec := observe.NewRecorder(observe.Options{Run: cfg.Name, Host: host, Command: notify.RedactArgs(cfg.Command), Ceiling: cfg.Limits.Ceiling,
		RestartAt: cfg.RestartAt, Sample: cfg.Sample, StateDir: dir, Pending: pending, StateDelay: stateDelay, Log: cfg.Log, Now: cfg.Now})
	ob := &observation{o: o, rec: rec, metrics: observe.NewMetrics(rec.Snapshot)}
	ctx, ob.cancel = context.WithCancel(ctx)
	if o.metricsAddr != "" {
		bound, done, err := observe.Serve(ctx, o.metricsAddr, o.metricsRemote, ob.metrics.Handler())
		if err != nil {
			ob.cancel()
			hint := "pick a free port, e.g. --metrics-addr 127.0.0.1:9464"
			if !o.metricsRemote {
				hint += "; to serve beyond loopback, add --metrics-remote"
			}
			return nil, usageError("--metrics-addr "+err.Error(), hint)
		}
		ob.served = done
		cfg.Log.Info("metrics", "run", cfg.Name, "addr", "http://"+bound+"/metrics")
	}
	return ob, nil
}

func (ob *observation) Observe(e supervise.Event) {
	ob.rec.Observe(e)
	ob.textfile()
}

func (ob *observation) textfile() {
	if ob.o.textfile == "" {
		return
	}
	if err := ob.metrics.WriteTextfile(ob.o.textfile); err != nil {
		ob.rec.Failed("metrics textfile", err)
	}
}

// finish records how the run ended and writes its files.
func (ob *observation) finish(r *supervise.Result) {
	o, rec := ob.o, ob.rec
	rec.Finish(observe.ExitOf(r))
	ob.textfile()
	ob.cancel()
	if ob.served != nil {
		<-ob.served
	}
	rep := rec.Report()
	if o.report != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = observe.WriteFile(o.report, append(b, '\n'), 0o644)
		}
		if err != nil {
			rec.Failed("report", err)
		}
	}
	if o.chart != "" {
		if err := drawChart(o.chart, rep); err != nil {
			rec.Failed("chart", err)
		}
	}
	if p := os.Getenv("GITHUB_STEP_SUMMARY"); p != "" {
		if err := observe.AppendStepSummary(p, rep); err != nil {
			rec.Failed("GitHub step summary", err)
		}
	}
}
