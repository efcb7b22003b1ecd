package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/proc"
	"github.com/guardrun/guardrun/internal/testchild"
	"github.com/guardrun/guardrun/observe/chart"
	"github.com/guardrun/guardrun/supervise"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	supervise.MaybeSentinel()
	testchild.MaybeRun()
	testscript.Main(m, map[string]func(){
		"guardrun": func() { os.Exit(run(os.Args, os.Stdout, os.Stderr)) },
		"child":    func() { os.Exit(testchild.Main(os.Args[1], os.Args[2:])) },
		// guardrun --chart finds it beside its own executable: testscript
		// puts each command, a copy of this binary, in one directory on PATH.
		"guardrun-chart": func() { os.Exit(chart.Main(os.Args, os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestCLI runs testdata/script/*.txt: the real guardrun binary, a real
// child, a real cgroup (v1 on the host, v2 in the VM).
func TestCLI(t *testing.T) {
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	testscript.Run(t, scriptParams("testdata/script", h))
}

// TestCLIInput runs testdata/cli/*.txt: what guardrun says to bad input,
// and its version, all decided before it makes a group or starts a child.
// They need neither root nor a cgroup, so they run, and fail, on a laptop
// too; a script that needs either belongs in testdata/script.
func TestCLIInput(t *testing.T) {
	testscript.Run(t, scriptParams("testdata/cli", cgroup.Discover()))
}

// scriptParams are the testscript parameters of the scripts in dir, with
// guardrun's own commands and conditions.
func scriptParams(dir string, h cgroup.Hierarchy) testscript.Params {
	return testscript.Params{
		Dir:                 dir,
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			e.Setenv("BACKEND", h.Version())
			// State files go to the script's own directory, not the
			// host's /run/guardrun (status.txt checks that default).
			e.Setenv("GUARDRUN_STATE_DIR", filepath.Join(e.WorkDir, "state"))
			// A free loopback port of the script's own, for --metrics-addr.
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			e.Setenv("PORT", strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
			// Express and what it needs, from the npm registry
			// (scripts/test installs them): express.txt needs them.
			e.Setenv("NODE_MODULES", os.Getenv("GUARDRUN_TEST_NODE_MODULES"))
			return l.Close()
		},
		// [vm]: the script runs in the cgroup v2 VM (scripts/vmtest), which
		// has no JDK and no npm packages: what needs them says so and runs
		// on the host.
		Condition: func(cond string) (bool, error) {
			if cond == "vm" {
				return os.Getenv("GUARDRUN_TEST_BACKEND") == "v2" && os.Getpid() != 1 && fileExists("/tests"), nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status":   cmdStatus,
			"waitfile": cmdWaitFile,
			"signal":   cmdSignal,
			"dead":     cmdDead,
			"nogroup":  cmdNoGroup,
			"reaped":   cmdReaped,
			"parent":   cmdParent,
			"receiver": cmdReceiver,
			"fetch":    cmdFetch,
			"sentinel": cmdSentinel,
			"filemode": cmdFileMode,
		},
	}
}

// filemode PATH: print PATH's permission bits (octal) and its type, as
// lstat sees it ("660 socket"); the VM has no stat(1).
func cmdFileMode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: filemode PATH")
	}
	fi, err := os.Lstat(ts.MkAbs(args[0]))
	ts.Check(err)
	kind := "file"
	switch m := fi.Mode(); {
	case m&os.ModeSocket != 0:
		kind = "socket"
	case m&os.ModeSymlink != 0:
		kind = "symlink"
	case m.IsDir():
		kind = "directory"
	}
	fmt.Fprintf(ts.Stdout(), "%o %s\n", fi.Mode().Perm(), kind)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// status N PROG ARGS...: run PROG and require exit status N.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status N prog args...")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("status %q: not a number", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("%s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}

// waitfile FILE [REGEXP]: wait (bounded) until a child has written FILE,
// and until it matches REGEXP when one is given.
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	re := regexp.MustCompile(".")
	if len(args) == 2 {
		re = regexp.MustCompile(args[1])
	}
	for i := 0; i < 1000; i++ {
		if b, err := os.ReadFile(ts.MkAbs(args[0])); err == nil && re.Match(b) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts.Fatalf("%s did not match %q within 10s", args[0], re)
}

// signal SIG PIDFILE: send SIG to the pid in PIDFILE.
func cmdSignal(ts *testscript.TestScript, neg bool, args []string) {
	sig, err := supervise.ParseSignal(args[0])
	ts.Check(err)
	b, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	ts.Check(err)
	ts.Check(syscall.Kill(pid, sig))
}

// dead PIDFILE: every pid listed in PIDFILE is gone within a bounded wait.
func cmdDead(ts *testscript.TestScript, neg bool, args []string) {
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		for i := 0; i < 500 && !neg && testchild.Alive(pid); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if alive := testchild.Alive(pid); alive != neg {
			ts.Fatalf("process %d alive=%v", pid, alive)
		}
	}
}

// reaped PIDFILE: the pid in PIDFILE is gone from /proc altogether: it
// exited and someone reaped it (a zombie still has its /proc entry).
func cmdReaped(ts *testscript.TestScript, neg bool, args []string) {
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	proc := "/proc/" + strings.TrimSpace(string(b))
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(proc); os.IsNotExist(err) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, _ := os.ReadFile(proc + "/stat")
	ts.Fatalf("%s was not reaped within 5s: %s", proc, st)
}

// parent PIDFILE PPIDFILE: the process in PIDFILE has, within a bounded
// wait, the parent in PPIDFILE.
func cmdParent(ts *testscript.TestScript, neg bool, args []string) {
	pid, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	want, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	n, err := strconv.Atoi(strings.TrimSpace(string(pid)))
	ts.Check(err)
	var st proc.Stat
	for i := 0; i < 500; i++ {
		if st, err = proc.ReadStat(n); err == nil && strconv.Itoa(st.PPid) == strings.TrimSpace(string(want)) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts.Fatalf("process %d does not have parent %s: %+v, %v", n, want, st, err)
}

// receiver FILE: a real HTTP receiver on 127.0.0.1 for the rest of the
// script; each request body is appended to FILE as one line, and $RECEIVER
// is its URL.
func cmdReceiver(ts *testscript.TestScript, neg bool, args []string) {
	file := ts.MkAbs(args[0])
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			f.Write(append(bytes.TrimSpace(b), '\n'))
			f.Close()
		}
	}))
	ts.Defer(srv.Close)
	ts.Setenv("RECEIVER", srv.URL)
}

// fetch URL FILE [REGEXP]: GET URL over loopback into FILE, retrying
// (bounded) until it answers 200 and, when given, the body matches REGEXP.
func cmdFetch(ts *testscript.TestScript, neg bool, args []string) {
	re := regexp.MustCompile(".")
	if len(args) == 3 {
		re = regexp.MustCompile("(?m)" + args[2])
	}
	client := &http.Client{Timeout: time.Second}
	var last string
	for i := 0; i < 100; i++ {
		resp, err := client.Get(args[0])
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && re.Match(b) {
				ts.Check(os.WriteFile(ts.MkAbs(args[1]), b, 0o644))
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, b)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	ts.Fatalf("%s did not answer 200 matching %q within 10s; last: %s", args[0], re, last)
}

// sentinel PIDFILE: wait (bounded) until the guardrun whose pid is in
// PIDFILE (a child's .ppid) has started its sentinel.
func cmdSentinel(ts *testscript.TestScript, neg bool, args []string) {
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	guardrun, err := strconv.Atoi(strings.TrimSpace(string(b)))
	ts.Check(err)
	for i := 0; i < 500; i++ {
		if sentinelOf(guardrun) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts.Fatalf("guardrun %d started no sentinel within 5s", guardrun)
}

// nogroup NAME: no cgroup of that name is left on any hierarchy.
func cmdNoGroup(ts *testscript.TestScript, neg bool, args []string) {
	h := cgroup.Discover()
	for _, root := range []string{h.V2, h.V1Memory, h.V1Pids} {
		if root == "" {
			continue
		}
		for _, n := range []string{args[0], ".hold-" + args[0]} { // the group, the name's hold
			p := filepath.Join(root, "guardrun", n)
			if _, err := os.Stat(p); err == nil {
				ts.Fatalf("%s is left behind", p)
			}
		}
	}
}

func TestExitCodeTable(t *testing.T) {
	// Bad command lines: one clear error line, a hint, exit 125, and
	// nothing started (the child would create the file).
	dir := t.TempDir()
	marker := filepath.Join(dir, "started")
	child := testchild.Command("touch", marker)
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--max", "5X"}, `--max 5X: unknown unit "X"`},
		{[]string{"--max", "0"}, `--max 0: must be at least 1 byte`},
		{[]string{"--max", "150%"}, `--max 150%: percentage must be above 0 and at most 100`},
		{[]string{"--swap-max", "1G"}, `--swap-max needs --max`},
		{[]string{"--name", "../etc"}, `--name: name "../etc" starts with a dot`},
		{[]string{"--name", "a/b"}, `--name: name "a/b" contains a slash`},
		{[]string{"--stop-signal", "NOPE"}, `--stop-signal: unknown signal "NOPE"`},
		{[]string{"--log-format", "xml"}, `--log-format xml: unknown format`},
		{[]string{"--cgroup", "v3"}, `--cgroup v3: unknown backend`},
		{[]string{"--pids-max", "0"}, `--pids-max 0: must be at least 1`},
		{[]string{"--stop-timeout", "-1s"}, `--stop-timeout must not be negative`},
		{[]string{"--preflight", "lots"}, `--preflight lots: unknown unit "lots"`},
		{[]string{"--bogus"}, `flag provided but not defined: -bogus`},
	} {
		var stderr strings.Builder
		args := append(append([]string{"guardrun"}, tc.args...), "--")
		code := run(append(args, child...), io.Discard, &stderr)
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if code != 125 || lines[0] != "guardrun: error: "+tc.err || len(lines) < 2 || !strings.HasPrefix(lines[1], "guardrun: hint: ") {
			t.Errorf("%v: exit %d, stderr:\n%s\nwant 125 and error: %s, then a hint", tc.args, code, stderr.String(), tc.err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%v: the child was started", tc.args)
		}
	}
}

func TestHelpDocumentsTheContract(t *testing.T) {
	var out strings.Builder
	if code := run([]string{"guardrun", "--help"}, &out, io.Discard); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, f := range flags() {
		if !strings.Contains(out.String(), "--"+f.Names()[0]) {
			t.Errorf("--help lacks --%s", f.Names()[0])
		}
	}
	for _, s := range []string{"137", "125", "126", "127", "128+N", "GUARDRUN_", "--config"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help lacks %q", s)
		}
	}
}

// willRun decides whether main catches the run's signals before it parses
// the flags: only for a command after --, never for a subcommand, which
// may live on (status --watch) and must die of a TERM.
func TestWillRun(t *testing.T) {
	app := newApp(io.Discard, io.Discard, new(int))
	for _, tc := range []struct {
		args string
		want bool
	}{
		{"guardrun --max 2G -- npm run build", true},
		{"guardrun -- true", true},
		{"guardrun --config api.toml", false},
		{"guardrun --max 2G --", false},
		{"guardrun status --watch", false},
		{"guardrun status -- api", false},
		{"guardrun --help -- true", false},
		{"guardrun --name status -- true", false}, // a value read as a name: only slower
		{"guardrun", false},
	} {
		if got := willRun(app, strings.Fields(tc.args)); got != tc.want {
			t.Errorf("willRun(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}
