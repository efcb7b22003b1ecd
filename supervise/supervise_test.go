package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
)

func TestMain(m *testing.M) {
	MaybeSentinel()
	testchild.MaybeRun()
	os.Exit(m.Run())
}

// config is a real run of the test binary as a child, in a real group.
func config(t *testing.T, max uint64, mode string, args ...string) Config {
	t.Helper()
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	return Config{
		Name:        fmt.Sprintf("grtest-%s-%d", t.Name(), os.Getpid()),
		Command:     testchild.Command(mode, args...),
		Backend:     h.Version(),
		Limits:      cgroup.Limits{Ceiling: max},
		StopTimeout: 10 * time.Second,
		Env:         testchild.Environ(),
	}
}

func run(t *testing.T, ctx context.Context, cfg Config, obs ...Observer) *Result {
	t.Helper()
	r, err := Run(ctx, cfg, obs...)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Path != "" {
		if _, err := os.Stat(r.Path); !os.IsNotExist(err) {
			t.Errorf("group %s is left behind", r.Path)
		}
	}
	return r
}

func TestOOMKillIsNamedAndExits137(t *testing.T) {
	r := run(t, context.Background(), config(t, 64<<20, "leak", "4"))
	if !r.OOMKilled() || r.ExitCode != ExitOOM {
		t.Fatalf("cause %s, exit %d; want oom_kill, 137", r.Cause, r.ExitCode)
	}
	want := "was killed by the kernel OOM killer at its 64 MiB ceiling (peak 64 MiB, ran "
	if s := r.Summary(); !strings.Contains(s, want) {
		t.Fatalf("summary %q lacks %q", s, want)
	}
}

func TestExitCodeIsPassedThrough(t *testing.T) {
	r := run(t, context.Background(), config(t, 64<<20, "exit", "3"))
	if r.Cause != "exited" || r.ExitCode != 3 || r.Stats.OOMKills != 0 {
		t.Fatalf("got %+v", r)
	}
	if s := r.Summary(); !strings.Contains(s, "exited 3 (peak ") || !strings.Contains(s, " of 64 MiB, ran ") {
		t.Fatalf("summary %q", s)
	}
}

func TestSignalDeathIs128PlusN(t *testing.T) {
	r := run(t, context.Background(), config(t, 64<<20, "kill-self", "15"))
	if r.Cause != "signaled" || r.ExitCode != 143 {
		t.Fatalf("cause %s exit %d, want signaled 143", r.Cause, r.ExitCode)
	}
	if s := r.Summary(); !strings.Contains(s, "was killed by signal 15 (SIGTERM)") {
		t.Fatalf("summary %q", s)
	}
}

func TestStopSendsStopSignal(t *testing.T) {
	file := filepath.Join(t.TempDir(), "signals")
	cfg := config(t, 64<<20, "signals", file)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { testchild.WaitFile(t, file+".ready"); cancel() }()
	r := run(t, ctx, cfg)
	if !r.Stopped || r.Forced || r.ExitCode != 0 {
		t.Fatalf("stopped=%v forced=%v exit=%d; want a clean stop", r.Stopped, r.Forced, r.ExitCode)
	}
	if got := testchild.WaitFile(t, file); !strings.Contains(got, "terminated") {
		t.Fatalf("child saw %q, want SIGTERM", got)
	}
}

func TestStopTimeoutKillsTheGroup(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	cfg := config(t, 64<<20, "ignore", ready)
	cfg.StopTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	go func() { testchild.WaitFile(t, ready); cancel() }()
	r := run(t, ctx, cfg)
	if !r.Forced || r.ExitCode != 137 || r.OOMKilled() {
		t.Fatalf("forced=%v exit=%d cause=%s; want the group killed, not an OOM kill", r.Forced, r.ExitCode, r.Cause)
	}
}

func TestWhatTheChildLeavesIsKilled(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	r := run(t, context.Background(), config(t, 64<<20, "daemon", pidfile))
	if r.ExitCode != 0 {
		t.Fatalf("exit %d", r.ExitCode)
	}
	pid, _ := strconv.Atoi(testchild.WaitFile(t, pidfile))
	// The daemon was reparented away from us; wait a bounded while for
	// its SIGKILL to land and its new parent to reap it.
	for i := 0; i < 200 && testchild.Alive(pid); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if testchild.Alive(pid) {
		t.Fatalf("daemonised grandchild %d outlived its group", pid)
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "script")
	os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct {
		cmd  string
		code int
	}{
		{"guardrun-no-such-command", ExitNotFound},
		{filepath.Join(dir, "missing"), ExitNotFound},
		{noexec, ExitNotExec},
		{dir, ExitNotExec},
	} {
		cfg := config(t, 64<<20, "exit", "0")
		cfg.Command = []string{tc.cmd}
		_, err := Run(context.Background(), cfg)
		var se *StartError
		if !errors.As(err, &se) || se.ExitCode() != tc.code {
			t.Errorf("%s: %v, want a StartError with exit %d", tc.cmd, err, tc.code)
		}
	}
}

func TestDerivedNameFallsBackWhenBusy(t *testing.T) {
	cfg := config(t, 64<<20, "exit", "0")
	g, err := cgroup.Open(cgroup.Options{Name: cfg.Name, Backend: cfg.Backend})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if _, err := Run(context.Background(), cfg); !errors.Is(err, cgroup.ErrBusy) {
		t.Fatalf("a given name that is busy: %v, want ErrBusy", err)
	}
	cfg.UniqueName = true
	r := run(t, context.Background(), cfg)
	if want := fmt.Sprintf("%s-%d", cfg.Name, os.Getpid()); r.Name != want {
		t.Fatalf("name %q, want %q", r.Name, want)
	}
}

// A TERM that comes after Prepare and before Run is a stop: nothing is
// started, and the group Prepare made goes.
func TestTermBeforeTheFirstStartStartsNothing(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ran")
	sv, err := Prepare(config(t, 64<<20, "touch", file))
	if err != nil {
		t.Fatal(err)
	}
	group := sv.first.Path()
	<-sv.caught
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i := 0; len(sv.sigs) == 0; i++ {
		if i == 5000 {
			t.Fatal("the TERM was not caught in 5s")
		}
		time.Sleep(time.Millisecond)
	}
	r, err := sv.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Stopped || r.Pid != 0 || r.ExitCode != 143 {
		t.Fatalf("stopped=%v pid=%d exit=%d; want a stop before any start, 143", r.Stopped, r.Pid, r.ExitCode)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the child ran: %v", err)
	}
	if _, err := os.Stat(group); !os.IsNotExist(err) {
		t.Errorf("the prepared group %s is left behind", group)
	}
}

// A run holds its name between its children: another guardrun that
// starts while the first waits out its backoff cannot take the name (and
// so make the first one's restart fail as busy); it falls back to
// NAME-PID, as at any busy name.
func TestTheNameIsHeldThroughTheBackoff(t *testing.T) {
	cfg := config(t, 64<<20, "exit", "0")
	cfg.UniqueName = true
	cfg.Restart = RestartAlways
	cfg.Backoff = Backoff{Min: 200 * time.Millisecond, Max: 200 * time.Millisecond, Factor: 1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other, starts := "", 0
	obs := ObserverFunc(func(e Event) {
		switch e.Kind {
		case Restarting:
			if other != "" {
				return
			}
			// In the backoff: no group of the first run exists now.
			sv, err := Prepare(cfg)
			if err != nil {
				t.Errorf("the second run: %v", err)
				other = "-"
				return
			}
			other = sv.Name()
			sv.Close()
		case Started:
			if starts++; starts == 2 {
				cancel()
			}
		}
	})
	r := run(t, ctx, cfg, obs)
	if want := fmt.Sprintf("%s-%d", cfg.Name, os.Getpid()); other != want {
		t.Errorf("the second run took %q during the first's backoff, want %q", other, want)
	}
	if starts != 2 || r.Err != nil {
		t.Fatalf("%d starts, err %v; want the restart to have run", starts, r.Err)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"TERM": syscall.SIGTERM, "sigint": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT, "9": syscall.SIGKILL, "hup": syscall.SIGHUP} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "FOO", "0", "99", "-1", "9x"} {
		if _, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q) accepted", bad)
		}
	}
}
