package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/user"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/proc"
	"github.com/guardrun/guardrun/supervise"
	"github.com/urfave/cli/v2"
)

// settings are the validated flags of one run.
type settings struct {
	supervise   supervise.Config
	notify      notifySettings
	observe     observeSettings
	notifyReady string
	quiet       bool
	logFormat   string
	// listen are the sockets the run holds (--listen, systemd's): guard
	// closes them, and removes the unix socket files made, at the end.
	listen *heldSockets
}

// env names the GUARDRUN_* variable of a long flag.
func env(name string) []string {
	return []string{"GUARDRUN_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

// flags are the command-line contract; docs/USAGE.md documents each.
func flags() []cli.Flag {
	return withNames(append([]cli.Flag{
		configFlag(),
		&cli.StringFlag{Name: "max", Usage: "memory ceiling `SIZE`: bytes, K M G T (KiB..TiB, base 1024) or N% of RAM", EnvVars: env("max")},
		&cli.StringFlag{Name: "swap-max", Usage: "swap the group may use beyond --max (`SIZE`); default 0, so the ceiling is the ceiling", EnvVars: env("swap-max")},
		&cli.Int64Flag{Name: "pids-max", Usage: "most processes and threads in the group (`N`)", EnvVars: env("pids-max")},
		&cli.StringFlag{Name: "name", Usage: "`NAME` of the run and its cgroup (default: the command's base name)", EnvVars: env("name")},
		&cli.StringFlag{Name: "stop-signal", Value: "TERM", Usage: "`SIG` sent to the child when guardrun is told to stop", EnvVars: env("stop-signal")},
		&cli.DurationFlag{Name: "stop-timeout", Value: 10 * time.Second, Usage: "after the stop signal, kill the whole group when `DUR` passes", EnvVars: env("stop-timeout")},
		&cli.StringFlag{Name: "kill-mode", Value: supervise.KillControlGroup, Usage: "who gets the stop signal, in systemd's words: control-group (every process in the group), mixed or process (the main child alone; the rest are killed at the timeout)", EnvVars: env("kill-mode")},
		&cli.StringFlag{Name: "preflight", Usage: "MemAvailable needed before starting (`SIZE` or off; default: --max)", EnvVars: env("preflight")},
		&cli.DurationFlag{Name: "preflight-wait", Usage: "wait up to `DUR` for the preflight to pass", EnvVars: env("preflight-wait")},
		&cli.StringFlag{Name: "restart", Value: "no", Usage: "restart `POLICY`: no, on-failure (non-zero exit, signal, OOM kill) or always", EnvVars: env("restart")},
		&cli.DurationFlag{Name: "backoff-min", Value: 100 * time.Millisecond, Usage: "first delay `DUR` before a restart", EnvVars: env("backoff-min")},
		&cli.DurationFlag{Name: "backoff-max", Value: 30 * time.Second, Usage: "longest delay `DUR` between restarts", EnvVars: env("backoff-max")},
		&cli.Float64Flag{Name: "backoff-factor", Value: 2, Usage: "each delay is the last times `F` (then jittered)", EnvVars: env("backoff-factor")},
		&cli.DurationFlag{Name: "backoff-reset", Value: 10 * time.Second, Usage: "a child up this long (`DUR`) resets the delay to --backoff-min", EnvVars: env("backoff-reset")},
		&cli.IntFlag{Name: "max-restarts", Value: 5, Usage: "give up after `N` restarts within --restart-window (0: never)", EnvVars: env("max-restarts")},
		&cli.DurationFlag{Name: "restart-window", Value: time.Minute, Usage: "the window `DUR` of --max-restarts", EnvVars: env("restart-window")},
		&cli.StringFlag{Name: "restart-at", Usage: "stop and restart the child when usage stays at `SIZE` or N% of --max", EnvVars: env("restart-at")},
		&cli.DurationFlag{Name: "restart-at-grace", Value: 3 * time.Second, Usage: "usage must stay over --restart-at this long (`DUR`)", EnvVars: env("restart-at-grace")},
		&cli.DurationFlag{Name: "restart-every", Usage: "restart the child gracefully `DUR` after it started (up to 5% earlier, so services do not restart together); not a failure, never counted toward --max-restarts", EnvVars: env("restart-every")},
		&cli.StringFlag{Name: "high", Usage: "throttle the group from `SIZE` on (memory.high; v1: soft limit)", EnvVars: env("high")},
		&cli.StringFlag{Name: "pressure", Usage: "PSI trigger `some|full:PCT/WINDOW` on the group's memory.pressure (v2), e.g. some:10%/1s", EnvVars: env("pressure")},
		&cli.BoolFlag{Name: "restart-on-pressure", Usage: "restart the child when the --pressure trigger fires", EnvVars: env("restart-on-pressure")},
		&cli.StringFlag{Name: "before-stop", Usage: "run `CMD` (sh -c) before --restart-at or --restart-on-pressure stops the child, with the restart as JSON on stdin and GUARDRUN_PID set", EnvVars: env("before-stop")},
		&cli.DurationFlag{Name: "before-stop-timeout", Value: 10 * time.Second, Usage: "kill the --before-stop hook after `DUR` and stop the child", EnvVars: env("before-stop-timeout")},
		&cli.StringFlag{Name: "heap-hint", Value: "auto", Usage: "`auto` or off: tell a Node.js, Go or JVM child its share of --max", EnvVars: env("heap-hint")},
		&cli.StringFlag{Name: "notify-ready", Value: "started", Usage: "under systemd Type=notify, send READY=1 when the child has `started`, or relay the child's own (child)", EnvVars: env("notify-ready")},
		listenFlag(),
		&cli.StringFlag{Name: "chdir", Usage: "run the child in `DIR` (as systemd's WorkingDirectory=)", EnvVars: env("chdir")},
		&cli.StringFlag{Name: "env-file", Usage: "add the KEY=VALUE lines of `FILE` to the child's environment (as systemd's EnvironmentFile=: # comments and blank lines skipped, one pair of quotes taken off)", EnvVars: env("env-file")},
		&cli.StringFlag{Name: "user", Usage: "run the child as `USER[:GROUP]` (name or number), with no way back; guardrun keeps root to manage the group", EnvVars: env("user")},
		&cli.StringFlag{Name: "cgroup", Value: "auto", Usage: "cgroup `BACKEND`: auto, v2, v1 or none", EnvVars: env("cgroup")},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only errors and the line that names an OOM kill or a crash loop", EnvVars: env("quiet")},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log lines as `FORMAT`: text or json", EnvVars: env("log-format")},
	}, append(notifyFlags(), observeFlags()...)...))
}

// configFlag is --config, of a run and of notify-test: one file serves
// both, each taking the keys of its own flags.
func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Usage: "read flags from a TOML `FILE` (same names as the long flags)", EnvVars: env("config")}
}

// withConfig applies --config, when given, to the command's own flags
// (own) before its action runs: for a command that runs nothing.
func withConfig(own []cli.Flag) cli.BeforeFunc {
	return func(c *cli.Context) error {
		_, err := readConfig(c, own)
		return err
	}
}

// readConfig applies --config, when given, to the command's own flags
// (own), and returns the command the file holds (command = [...]), if any.
func readConfig(c *cli.Context, own []cli.Flag) ([]string, error) {
	if p := c.String("config"); p != "" {
		return applyConfig(c, p, own)
	}
	return nil, nil
}

// commandKey is the config file's command: a list of strings, so that a
// unit can run guardrun --config FILE with nothing after it, and no word
// is split or quoted by anyone.
const commandKey = "command"

// applyConfig fills every flag that neither the command line nor the
// environment set from the TOML file, so the command line wins over env,
// env over the file. An unknown key is an error: a typo must not turn a
// ceiling into no ceiling.
// applyConfig sets each key of the TOML file at path that names one of
// the command's own flags and is not set on the command line or in the
// environment. A key that is no flag of guardrun's is refused; one of a
// run's flags that this command lacks is left for the run.
func applyConfig(c *cli.Context, path string, own []cli.Flag) ([]string, error) {
	var file map[string]any
	if _, err := toml.DecodeFile(path, &file); err != nil {
		return nil, usageError(fmt.Sprintf("--config %s: %v", path, err), "the file is TOML: one `name = value` per line, e.g. max = \"512M\"")
	}
	command, err := configCommand(path, file)
	if err != nil {
		return nil, err
	}
	delete(file, commandKey)
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
			names = append(names, commandKey)
			sort.Strings(names)
			return nil, usageError(fmt.Sprintf("--config %s: unknown key %q", path, k), "keys are the long flag names and command: "+strings.Join(names, ", "))
		}
		if c.IsSet(k) || lookupFlag(own, k) == nil {
			continue
		}
		// A list (notify = ["...", "..."]) sets a repeatable flag once per item.
		values := []any{file[k]}
		if list, ok := file[k].([]any); ok {
			values = list
		}
		for _, v := range values {
			if err := c.Set(k, fmt.Sprint(v)); err != nil {
				return nil, configValueError(path, k, v, err)
			}
		}
	}
	return command, nil
}

// configCommand is the file's command = [...], checked: a list of one or
// more strings, the first not empty.
func configCommand(path string, file map[string]any) ([]string, error) {
	v, ok := file[commandKey]
	if !ok {
		return nil, nil
	}
	hint := `write it as a list, one word an item: command = ["/usr/bin/node", "/srv/api/app.js"]`
	list, ok := v.([]any)
	if !ok {
		return nil, usageError(fmt.Sprintf("--config %s: command = %s: not a list of strings", path, tomlValue(v)), hint)
	}
	if len(list) == 0 {
		return nil, usageError(fmt.Sprintf("--config %s: command = []: an empty list", path), hint)
	}
	argv := make([]string, len(list))
	for i, item := range list {
		w, ok := item.(string)
		if !ok {
			return nil, usageError(fmt.Sprintf("--config %s: command: item %d is %s, not a string", path, i+1, tomlValue(item)), hint)
		}
		argv[i] = w
	}
	if argv[0] == "" {
		return nil, usageError(fmt.Sprintf("--config %s: command: the program (item 1) is empty", path), hint)
	}
	return argv, nil
}

// tomlValue shows a decoded TOML value as the file would have it.
func tomlValue(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// loadSettings layers the sources and validates every value before anything
// is created, so bad input changes nothing.
// fileCommand is the --config file's command, if it holds one.
func loadSettings(c *cli.Context, fileCommand []string) (*settings, error) {
	args := c.Args().Slice()
	switch {
	case len(args) > 0 && fileCommand != nil:
		return nil, usageError(fmt.Sprintf("two commands: %s after the flags, and command = [...] in --config %s", strconv.Quote(args[0]), c.String("config")),
			"keep one: leave out the command after the flags to run the file's, or take command out of the file")
	case len(args) == 0 && fileCommand == nil:
		return nil, usageError("no command to run", "put the command after the flags: guardrun --max 512M -- node app.js", `or in the --config file: command = ["node", "app.js"]`)
	case len(args) == 0:
		args = fileCommand
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
	if m, err := proc.ReadMemInfo(); err == nil {
		total = m.Total
	}
	size := func(flag string) (uint64, error) {
		v, err := cgroup.ParseSize(c.String(flag), total)
		if err == nil && (flag == "max" || flag == "high") {
			// A ceiling, or a throttle under it, that no process fits in
			// is a slip of the unit (cgroup.MinCeiling).
			most := total
			if flag == "high" && cfg.Limits.Ceiling > 0 {
				most = cfg.Limits.Ceiling
			}
			err = cgroup.CheckFloor(c.String(flag), v, most)
		}
		var se *cgroup.SizeError
		if errors.As(err, &se) {
			return 0, usageError(fmt.Sprintf("--%s %s: %s", flag, c.String(flag), se.Reason), sizeHints(se, cgroup.SizeHint)...)
		}
		if err != nil {
			return 0, usageError(fmt.Sprintf("--%s %s: %v", flag, c.String(flag), err), cgroup.SizeHint)
		}
		return v, nil
	}
	var err error
	if c.String("max") != "" {
		if cfg.Limits.Ceiling, err = size("max"); err != nil {
			return nil, err
		}
	}
	if total > 0 && cfg.Limits.Ceiling > total {
		// memory.max bounds RAM alone: a ceiling above the host's RAM is
		// never reached, and the host's own OOM killer acts first.
		return nil, usageError(fmt.Sprintf("--max %s is above this host's physical memory (%s)", cgroup.FormatSize(cfg.Limits.Ceiling), cgroup.FormatSize(total)),
			"a ceiling above RAM is never reached; use a size below it or a percentage like 80%")
	}
	if c.String("swap-max") != "" {
		if c.String("swap-max") == "0" {
			cfg.Limits.SwapMax = 0
		} else if cfg.Limits.SwapMax, err = size("swap-max"); err != nil {
			return nil, err
		}
		cfg.Limits.SwapSet = true
	}
	if cfg.Limits.SwapSet && cfg.Limits.Ceiling == 0 {
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
	if cfg.KillMode = c.String("kill-mode"); !slices.Contains(supervise.KillModes, cfg.KillMode) {
		return nil, usageError(fmt.Sprintf("--kill-mode %s: unknown mode", cfg.KillMode), "use control-group (the default, as systemd's), mixed or process")
	}
	if cfg.StopTimeout = c.Duration("stop-timeout"); cfg.StopTimeout < 0 {
		return nil, usageError("--stop-timeout must not be negative", "use a duration like 10s or 1m30s")
	}

	switch p := c.String("preflight"); p {
	case "off", "0":
	case "":
		cfg.Preflight.Need = cfg.Limits.Ceiling
	default:
		if cfg.Preflight.Need, err = size("preflight"); err != nil {
			return nil, err
		}
	}
	if cfg.Preflight.Wait = c.Duration("preflight-wait"); cfg.Preflight.Wait < 0 {
		return nil, usageError("--preflight-wait must not be negative", "use a duration like 30s or 2m")
	}
	if err := loadSupervision(c, cfg, size); err != nil {
		return nil, err
	}
	if s.notify, err = loadNotify(c); err != nil {
		return nil, err
	}
	if s.observe, err = loadObserve(c); err != nil {
		return nil, err
	}
	if s.observe.wantsSamples(len(s.notify.sinks) > 0) {
		cfg.Sample = s.observe.sample
		if cfg.Sample > 0 {
			cfg.LeakWindow = s.observe.leakWindow
		}
	}
	if s.notifyReady = c.String("notify-ready"); s.notifyReady != "started" && s.notifyReady != "child" {
		return nil, usageError("--notify-ready "+s.notifyReady+": unknown mode", "use started (READY=1 once the child runs) or child (the child sends its own READY=1)")
	}
	if u := c.String("user"); u != "" {
		if cfg.Credential, err = credential(u); err != nil {
			hint := "name a user (and group) that exists here, e.g. --user www-data or --user 1000:1000"
			if errors.Is(err, errNotRoot) {
				hint = "run guardrun as root (e.g. as a system service), or leave --user out to run the child as yourself"
			}
			return nil, usageError("--user "+u+": "+err.Error(), hint)
		}
	}
	if d := c.String("chdir"); d != "" {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			why := "not a directory"
			if err != nil {
				why = unwrapPath(err).Error()
			}
			return nil, usageError(fmt.Sprintf("--chdir %s: %s", d, why), "name a directory the child can run in")
		}
		cfg.Dir = d
	}
	cfg.Env = os.Environ()
	if f := c.String("env-file"); f != "" {
		extra, err := readEnvFile(f)
		if err != nil {
			return nil, usageError("--env-file "+err.Error(), "write one KEY=VALUE a line; # starts a comment line")
		}
		cfg.Env = append(cfg.Env, extra...)
	}
	// Last: binding makes something, and bad input above must not.
	if s.listen, err = loadListen(c, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// unwrapPath is a *fs.PathError's errno alone, as the message names the
// path already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readEnvFile reads KEY=VALUE lines as systemd's EnvironmentFile= does in
// its common form: blank lines and lines starting with # or ; are
// skipped, space around the line is trimmed, and one pair of matching
// quotes around the value is taken off. A line without = or with a key
// that is no variable name is an error that names it; guardrun does not
// guess.
func readEnvFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, unwrapPath(err))
	}
	var env []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(strings.TrimPrefix(k, "export "))
		if !ok || !envName(k) {
			return nil, fmt.Errorf("%s:%d: %q is not KEY=VALUE", path, i+1, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, k+"="+v)
	}
	return env, nil
}

// envName reports a shell variable name: a letter or _, then letters,
// digits and _.
func envName(k string) bool {
	for i, r := range k {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return k != ""
}

var errNotRoot = errors.New("only root can run a child as another user")

// credential resolves USER[:GROUP]. Without a group the user's primary
// group is taken; supplementary groups are the user's own, never root's.
func credential(spec string) (*syscall.Credential, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	if os.Geteuid() != 0 {
		return nil, errNotRoot
	}
	// A number is an id, and must be one: an id past 32 bits would wrap
	// to another (4294967296 is root) in the lookup and in setuid, and
	// 4294967295 is (uid_t)-1, which setuid takes as "no change".
	for _, id := range [][2]string{{"uid", name}, {"gid", group}} { // in this order: the error names the first
		if v := id[1]; v != "" && strings.Trim(v, "0123456789") == "" {
			if n, err := strconv.ParseUint(v, 10, 32); err != nil || n == math.MaxUint32 {
				return nil, fmt.Errorf("%s %s is out of range: ids go from 0 to %d", id[0], v, uint32(math.MaxUint32-1))
			}
		}
	}
	cred := &syscall.Credential{Groups: []uint32{}}
	u, err := user.Lookup(name)
	if err != nil {
		u, err = user.LookupId(name)
	}
	switch n, numErr := strconv.ParseUint(name, 10, 32); {
	case err == nil:
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred.Uid, cred.Gid = uint32(uid), uint32(gid)
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.ParseUint(id, 10, 32); err == nil && uint32(g) != cred.Gid {
					cred.Groups = append(cred.Groups, uint32(g))
				}
			}
		}
	case numErr == nil && hasGroup:
		// A numeric uid without a passwd entry, as in a minimal
		// container: taken as it is, with the group given.
		cred.Uid = uint32(n)
	case numErr == nil:
		return nil, fmt.Errorf("uid %d has no passwd entry, so no group; give one: --user %d:GID", n, n)
	default:
		return nil, fmt.Errorf("no such user")
	}
	if hasGroup {
		g, err := user.LookupGroup(group)
		if err != nil {
			g, err = user.LookupGroupId(group)
		}
		switch n, numErr := strconv.ParseUint(group, 10, 32); {
		case err == nil:
			gid, _ := strconv.ParseUint(g.Gid, 10, 32)
			cred.Gid = uint32(gid)
		case numErr == nil:
			cred.Gid = uint32(n)
		default:
			return nil, fmt.Errorf("no such group %q", group)
		}
	}
	return cred, nil
}

// loadSupervision reads the restart, backoff, threshold, pressure and heap
// hint flags.
func loadSupervision(c *cli.Context, cfg *supervise.Config, size func(string) (uint64, error)) error {
	cfg.Restart = supervise.Policy(c.String("restart"))
	if !slices.Contains(supervise.Policies, cfg.Restart) {
		return usageError(fmt.Sprintf("--restart %s: unknown policy", cfg.Restart), "use no, on-failure or always (as systemd's Restart=)")
	}
	b := &cfg.Backoff
	b.Min, b.Max, b.Factor, b.Reset = c.Duration("backoff-min"), c.Duration("backoff-max"), c.Float64("backoff-factor"), c.Duration("backoff-reset")
	switch {
	case b.Min < 0 || b.Max < 0 || b.Reset < 0:
		return usageError("--backoff-min, --backoff-max and --backoff-reset must not be negative", "use durations like 100ms, 30s, 10s")
	case b.Max < b.Min:
		return usageError(fmt.Sprintf("--backoff-max %s is below --backoff-min %s", b.Max, b.Min), "raise --backoff-max or lower --backoff-min")
	case b.Factor < 1:
		return usageError(fmt.Sprintf("--backoff-factor %g: must be at least 1", b.Factor), "2 doubles each delay, 1 keeps it at --backoff-min")
	}
	cfg.MaxRestarts, cfg.RestartWindow = c.Int("max-restarts"), c.Duration("restart-window")
	if cfg.MaxRestarts < 0 || cfg.RestartWindow < 0 {
		return usageError("--max-restarts and --restart-window must not be negative", "0 restarts means never give up")
	}

	var err error
	if v := c.String("high"); v != "" {
		if cfg.Limits.High, err = size("high"); err != nil {
			return err
		}
	}
	if v := c.String("restart-at"); v != "" {
		if strings.HasSuffix(v, "%") && cfg.Limits.Ceiling == 0 {
			return usageError("--restart-at "+v+": a percentage needs --max", "set the ceiling, e.g. --max 512M --restart-at 90%")
		}
		at, err := cgroup.ParseSize(v, cfg.Limits.Ceiling)
		if err == nil {
			var below uint64 // a guess must be under --max
			if cfg.Limits.Ceiling > 0 {
				below = cfg.Limits.Ceiling - 1
			}
			err = cgroup.CheckFloor(v, at, below)
		}
		var se *cgroup.SizeError
		if errors.As(err, &se) {
			return usageError(fmt.Sprintf("--restart-at %s: %s", v, se.Reason), sizeHints(se, "use a SIZE or a percentage of --max like 90%")...)
		}
		if cfg.Limits.Ceiling > 0 && at >= cfg.Limits.Ceiling {
			return usageError(fmt.Sprintf("--restart-at %s is not below --max %s", cgroup.FormatSize(at), cgroup.FormatSize(cfg.Limits.Ceiling)), "the restart must come before the ceiling, e.g. --restart-at 90%")
		}
		cfg.RestartAt = at
	}
	if cfg.RestartAtGrace = c.Duration("restart-at-grace"); cfg.RestartAtGrace < 0 {
		return usageError("--restart-at-grace must not be negative", "use a duration like 3s")
	}
	if c.IsSet("restart-every") {
		if cfg.RestartEvery = c.Duration("restart-every"); cfg.RestartEvery < time.Second {
			return usageError(fmt.Sprintf("--restart-every %s: must be at least 1s", cfg.RestartEvery), "use a duration like 24h, 6h or 30m")
		}
	}
	if v := c.String("pressure"); v != "" {
		if cfg.Pressure, err = psiTrigger(v); err != nil {
			return usageError("--pressure "+v+": "+err.Error(), "use some|full:PCT/WINDOW with a window from 500ms to 10s, e.g. some:10%/1s")
		}
	}
	cfg.RestartOnPressure = c.Bool("restart-on-pressure")
	if cfg.RestartOnPressure && cfg.Pressure == "" {
		return usageError("--restart-on-pressure needs --pressure", "e.g. --pressure some:20%/2s --restart-on-pressure")
	}
	if (cfg.RestartAt > 0 || cfg.RestartOnPressure) && cfg.Restart == supervise.RestartNo {
		return usageError("--restart-at and --restart-on-pressure restart the child, but --restart is no", "add --restart on-failure or --restart always")
	}
	if cfg.BeforeStop = c.String("before-stop"); c.IsSet("before-stop") && strings.TrimSpace(cfg.BeforeStop) == "" {
		return usageError("--before-stop: empty command", "give a shell command, e.g. --before-stop 'jcmd $GUARDRUN_PID GC.heap_dump /var/tmp/app.hprof'")
	}
	if cfg.BeforeStop != "" && cfg.RestartAt == 0 && !cfg.RestartOnPressure {
		return usageError("--before-stop runs before --restart-at or --restart-on-pressure stops the child, and neither is set", "add --restart-at 90% (with --max), or --pressure ... --restart-on-pressure")
	}
	if cfg.BeforeStopTimeout = c.Duration("before-stop-timeout"); cfg.BeforeStopTimeout <= 0 {
		return usageError("--before-stop-timeout must be positive", "use a duration like 10s")
	}
	switch c.String("heap-hint") {
	case "auto":
		cfg.HeapHint = true
	case "off":
	default:
		return usageError(fmt.Sprintf("--heap-hint %s: unknown mode", c.String("heap-hint")), "use auto or off")
	}
	return nil
}

// psiTrigger turns some|full:PCT/WINDOW into the kernel's trigger form,
// "some 100000 1000000" (stall and window in microseconds; psi.rst). The
// kernel takes windows from 500 ms to 10 s.
func psiTrigger(v string) (string, error) {
	kind, rest, ok := strings.Cut(v, ":")
	pct, win, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || (kind != "some" && kind != "full") || !strings.HasSuffix(pct, "%") {
		return "", errors.New("not of the form some|full:PCT/WINDOW")
	}
	p, err := strconv.ParseFloat(strings.TrimSuffix(pct, "%"), 64)
	if err != nil || !(p > 0 && p <= 100) { // NaN too
		return "", errors.New("the percentage must be above 0 and at most 100")
	}
	w, err := time.ParseDuration(win)
	if err != nil || w < 500*time.Millisecond || w > 10*time.Second {
		return "", errors.New("the window must be a duration from 500ms to 10s")
	}
	stall := int64(float64(w.Microseconds()) * p / 100)
	if stall < 1 {
		// The kernel refuses a zero threshold (EINVAL) when the run
		// starts; say it now.
		return "", fmt.Errorf("%s%% of %s is under a microsecond, the kernel's least stall", strings.TrimSuffix(pct, "%"), w)
	}
	return fmt.Sprintf("%s %d %d", kind, stall, w.Microseconds()), nil
}

// sizeHints are the hints under a refused size: its own (a guess at the
// unit) or, without one, what sizes look like.
func sizeHints(se *cgroup.SizeError, otherwise string) []string {
	if len(se.Hints) > 0 {
		return se.Hints
	}
	return []string{otherwise}
}

// durationHint says what a duration flag takes (time.ParseDuration).
const durationHint = "use a number with a unit (ns, us, ms, s, m or h), or several: 500ms, 10s, 1m30s, 24h"

// flagValueError explains a value that the flag package refused, as urfave/cli
// reports it: which flag and value, what was wrong, what is accepted. The
// flag package's own word for a bad duration or number is "parse error",
// and urfave/cli adds "see --help"; neither says that 5 needs a unit. It is
// nil for an error of another kind.
func flagValueError(fs []cli.Flag, err error) error {
	var flag, value, where string
	if m := cliValueRe().FindStringSubmatch(err.Error()); m != nil {
		value, _ = strconv.Unquote(m[1])
		flag, where = m[2], "--"+m[2]+" "+value
	} else if m := envValueRe().FindStringSubmatch(err.Error()); m != nil {
		value, _ = strconv.Unquote(m[1])
		env, _ := strconv.Unquote(m[2])
		flag, where = m[3], env+"="+value
	} else {
		return nil
	}
	reason, hint := valueProblem(lookupFlag(fs, flag), value)
	if reason == "" {
		return nil
	}
	return usageError(where+": "+reason, hint)
}

// The messages of the parsers guardrun rewrites into its own words.
var (
	// flag.FlagSet: invalid value "5" for flag -stop-timeout: parse error
	cliValueRe = lazyRegexp(`^invalid value ("(?:[^"\\]|\\.)*") for flag -(\S+): `)
	// urfave/cli: could not parse "5" as duration value from environment
	// variable "GUARDRUN_STOP_TIMEOUT" for flag stop-timeout: ...
	envValueRe = lazyRegexp(`^could not parse ("(?:[^"\\]|\\.)*") as \S+ value from environment variable ("(?:[^"\\]|\\.)*") for flag (\S+): `)
	// time.ParseDuration: time: unknown unit "sec" in duration "5sec"
	unknownUnitRe = lazyRegexp(`unknown unit ("(?:[^"\\]|\\.)*") in duration`)
)

// configValueError explains a --config value that its flag refused. A
// number where a duration belongs is how TOML reads `stop-timeout = 5`.
func configValueError(path, key string, v any, err error) error {
	shown := fmt.Sprint(v)
	if s, ok := v.(string); ok {
		shown = strconv.Quote(s)
	}
	f := lookupFlag(flags(), key)
	reason, hint := valueProblem(f, fmt.Sprint(v))
	if reason == "" {
		return usageError(fmt.Sprintf("--config %s: %s = %s: %v", path, key, shown, err), "see guardrun --help for what "+key+" takes")
	}
	hints := []string{hint}
	_, isString := v.(string)
	if _, isDur := plainFlag(f).(*cli.DurationFlag); isDur && !isString && strings.HasPrefix(reason, "a duration needs a unit") {
		hints = append(hints, fmt.Sprintf("a duration is a string in TOML: %s = \"%vs\"", key, v))
	}
	return usageError(fmt.Sprintf("--config %s: %s = %s: %s", path, key, shown, reason), hints...)
}

func lookupFlag(fs []cli.Flag, name string) cli.Flag {
	for _, f := range fs {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

// valueProblem says in a few words why value does not fit flag f, and what
// does; "" for a flag of a kind it does not know.
func valueProblem(f cli.Flag, value string) (reason, hint string) {
	v := strings.TrimSpace(value)
	switch plainFlag(f).(type) {
	case *cli.DurationFlag:
		return durationProblem(v), durationHint
	case *cli.IntFlag, *cli.Int64Flag:
		return "not a whole number", "use digits only, e.g. 512"
	case *cli.Float64Flag:
		return "not a number", "use a number like 2 or 1.5"
	case *cli.BoolFlag:
		return "not true or false", "use true or false, or give the flag alone for true"
	}
	return "", ""
}

// durationProblem says why time.ParseDuration refuses v.
func durationProblem(v string) string {
	_, err := time.ParseDuration(v)
	if rest, neg := strings.CutPrefix(v, "-"); neg && rest != "" && strings.ContainsRune("0123456789.", rune(rest[0])) {
		return "a duration cannot be negative"
	}
	if _, nerr := strconv.ParseFloat(v, 64); nerr == nil && strings.Trim(v, "0123456789.") == "" {
		return "a duration needs a unit, e.g. " + v + "s"
	}
	if m := unknownUnitRe().FindStringSubmatch(fmt.Sprint(err)); m != nil {
		return "unknown unit " + m[1]
	}
	return "not a duration"
}

// lazyRegexp compiles a pattern on its first use: a package-level
// regexp.MustCompile runs in every start's init, before guardrun knows
// whether it will need it (guardrun's start-up is measured against
// cgexec's, scripts/bench section 7).
func lazyRegexp(pattern string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(pattern) })
}
