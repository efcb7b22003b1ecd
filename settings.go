package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
	"github.com/shirou/gopsutil/v4/mem"
	"github.com/urfave/cli/v2"
)

// settings are the validated flags of one run.
type settings struct {
	supervise supervise.Config
	quiet     bool
	logFormat string
}

// env names the GUARDRUN_* variable of a long flag.
func env(name string) []string {
	return []string{"GUARDRUN_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

// flags are the command-line contract; README documents each.
func flags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "read flags from a TOML `FILE` (same names as the long flags)", EnvVars: env("config")},
		&cli.StringFlag{Name: "max", Usage: "memory ceiling `SIZE`: bytes, K M G T (KiB..TiB, base 1024) or N% of RAM", EnvVars: env("max")},
		&cli.StringFlag{Name: "swap-max", Usage: "swap the group may use beyond --max (`SIZE`); default 0, so the ceiling is the ceiling", EnvVars: env("swap-max")},
		&cli.Int64Flag{Name: "pids-max", Usage: "most processes and threads in the group (`N`)", EnvVars: env("pids-max")},
		&cli.StringFlag{Name: "name", Usage: "`NAME` of the run and its cgroup (default: the command's base name)", EnvVars: env("name")},
		&cli.StringFlag{Name: "stop-signal", Value: "TERM", Usage: "`SIG` sent to the child when guardrun is told to stop", EnvVars: env("stop-signal")},
		&cli.DurationFlag{Name: "stop-timeout", Value: 10 * time.Second, Usage: "after the stop signal, kill the whole group when `DUR` passes", EnvVars: env("stop-timeout")},
		&cli.StringFlag{Name: "preflight", Usage: "MemAvailable needed before starting (`SIZE` or off; default: --max)", EnvVars: env("preflight")},
		&cli.DurationFlag{Name: "preflight-wait", Usage: "wait up to `DUR` for the preflight to pass", EnvVars: env("preflight-wait")},
		&cli.StringFlag{Name: "cgroup", Value: "auto", Usage: "cgroup `BACKEND`: auto, v2, v1 or none", EnvVars: env("cgroup")},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only warnings, errors and an OOM kill", EnvVars: env("quiet")},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log lines as `FORMAT`: text or json", EnvVars: env("log-format")},
	}
}

// applyConfig fills every flag that neither the command line nor the
// environment set from the TOML file, so the command line wins over env,
// env over the file. An unknown key is an error: a typo must not turn a
// ceiling into no ceiling.
func applyConfig(c *cli.Context, path string) error {
	var file map[string]any
	if _, err := toml.DecodeFile(path, &file); err != nil {
		return usageError(fmt.Sprintf("--config %s: %v", path, err), "the file is TOML: one `name = value` per line, e.g. max = \"512M\"")
	}
	known := map[string]bool{}
	for _, f := range flags() {
		known[f.Names()[0]] = true
	}
	keys := make([]string, 0, len(file))
	for k := range file {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !known[k] || k == "config" {
			names := make([]string, 0, len(known))
			for n := range known {
				if n != "config" {
					names = append(names, n)
				}
			}
			sort.Strings(names)
			return usageError(fmt.Sprintf("--config %s: unknown key %q", path, k), "keys are the long flag names: "+strings.Join(names, ", "))
		}
		if c.IsSet(k) {
			continue
		}
		if err := c.Set(k, fmt.Sprint(file[k])); err != nil {
			return usageError(fmt.Sprintf("--config %s: %s = %v: %v", path, k, file[k], err), "see guardrun --help for what "+k+" takes")
		}
	}
	return nil
}

// loadSettings layers the sources and validates every value before anything
// is created, so bad input changes nothing.
func loadSettings(c *cli.Context) (*settings, error) {
	if p := c.String("config"); p != "" {
		if err := applyConfig(c, p); err != nil {
			return nil, err
		}
	}
	args := c.Args().Slice()
	if len(args) == 0 {
		return nil, usageError("no command to run", "put the command after the flags: guardrun --max 512M -- node app.js")
	}
	s := &settings{quiet: c.Bool("quiet"), logFormat: c.String("log-format")}
	if !slices.Contains([]string{"text", "json"}, s.logFormat) {
		return nil, usageError(fmt.Sprintf("--log-format %s: unknown format", s.logFormat), "use text or json")
	}
	cfg := &s.supervise
	cfg.Command = args
	cfg.Backend = c.String("cgroup")
	if !slices.Contains(cgroup.Backends, cfg.Backend) {
		return nil, usageError(fmt.Sprintf("--cgroup %s: unknown backend", cfg.Backend), "use auto, v2, v1 or none")
	}

	var total uint64
	if vm, err := mem.VirtualMemory(); err == nil {
		total = vm.Total
	}
	size := func(flag string) (uint64, error) {
		v, err := cgroup.ParseSize(c.String(flag), total)
		var se *cgroup.SizeError
		if errors.As(err, &se) {
			return 0, usageError(fmt.Sprintf("--%s %s: %s", flag, c.String(flag), se.Reason), cgroup.SizeHint)
		}
		if err != nil {
			return 0, usageError(fmt.Sprintf("--%s %s: %v", flag, c.String(flag), err), cgroup.SizeHint)
		}
		return v, nil
	}
	var err error
	if c.String("max") != "" {
		if cfg.Limits.Max, err = size("max"); err != nil {
			return nil, err
		}
	}
	if c.String("swap-max") != "" {
		if c.String("swap-max") == "0" {
			cfg.Limits.SwapMax = 0
		} else if cfg.Limits.SwapMax, err = size("swap-max"); err != nil {
			return nil, err
		}
		cfg.Limits.SwapSet = true
	}
	if cfg.Limits.SwapSet && cfg.Limits.Max == 0 {
		return nil, usageError("--swap-max needs --max", "set the memory ceiling too, e.g. --max 512M --swap-max 256M")
	}
	if cfg.Limits.PidsMax = c.Int64("pids-max"); cfg.Limits.PidsMax < 0 || (c.IsSet("pids-max") && cfg.Limits.PidsMax == 0) {
		return nil, usageError(fmt.Sprintf("--pids-max %d: must be at least 1", cfg.Limits.PidsMax), "count processes and threads: a Go or Node.js child needs several")
	}

	cfg.Name = c.String("name")
	if cfg.Name == "" {
		cfg.Name = cgroup.NameFor(args[0])
		cfg.UniqueName = true
	} else if err := cgroup.ValidName(cfg.Name); err != nil {
		return nil, usageError("--name: "+err.Error(), "use letters, digits and - _ . @ : (no slash, no leading dot, no spaces)")
	}

	sig, err := supervise.ParseSignal(c.String("stop-signal"))
	if err != nil {
		return nil, usageError("--stop-signal: "+err.Error(), "use a name like TERM, INT, QUIT or a number")
	}
	cfg.StopSignal = sig
	if cfg.StopTimeout = c.Duration("stop-timeout"); cfg.StopTimeout < 0 {
		return nil, usageError("--stop-timeout must not be negative", "use a duration like 10s or 1m30s")
	}

	switch p := c.String("preflight"); p {
	case "off", "0":
	case "":
		cfg.Preflight.Need = cfg.Limits.Max
	default:
		if cfg.Preflight.Need, err = size("preflight"); err != nil {
			return nil, err
		}
	}
	if cfg.Preflight.Wait = c.Duration("preflight-wait"); cfg.Preflight.Wait < 0 {
		return nil, usageError("--preflight-wait must not be negative", "use a duration like 30s or 2m")
	}
	cfg.Env = os.Environ()
	return s, nil
}
