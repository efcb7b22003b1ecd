package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/guardrun/guardrun/internal/testchild"
)

// Every failure of Open and Start after the group's directories were made
// leaves no group behind, and never one of guardrun's threads in it (issue
// 11: `--max 256` left both v1 groups on the host). Real groups: v1 on the
// host, v2 in the VM (scripts/vmtest -run 'Start|Floor').

// gfName names a test's group; scripts look for the gf- prefix.
func gfName(t *testing.T) string {
	return fmt.Sprintf("gf-%s-%d", strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()), os.Getpid())
}

// groupDirs are where a group of that name would be, on every hierarchy
// this host has.
func groupDirs(name string) []string {
	h := Discover()
	var dirs []string
	for _, root := range []string{h.V2, h.V1Memory, h.V1Pids} {
		if root != "" {
			dirs = append(dirs, filepath.Join(root, "guardrun", name))
		}
	}
	return dirs
}

// requireNoGroup fails if anything of the group called name is left.
func requireNoGroup(t *testing.T, name string) {
	t.Helper()
	for _, d := range groupDirs(name) {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is left behind (%v)", d, err)
		}
	}
}

// requireThreadsOutside fails if any thread of this process is in the
// group called name: the v1 start lends one and must take it back.
func requireThreadsOutside(t *testing.T, name string) {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "cgroup"))
		if err != nil {
			continue // ended meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasSuffix(line, "/guardrun/"+name) {
				t.Errorf("guardrun's thread %s is in %s", task.Name(), line)
			}
		}
	}
}

// openName makes the group for a test and removes it at the end, if the
// test did not.
func openName(t *testing.T, l Limits) (Group, string) {
	t.Helper()
	h := Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	name := gfName(t)
	g, err := Open(Options{Name: name, Backend: h.Version(), Limits: l})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { g.Remove() })
	return g, name
}

// failedStart checks what a Start that failed leaves: no thread of ours in
// the group, nothing in it, and a Remove that takes all of it away.
func failedStart(t *testing.T, g Group, name string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Start succeeded; want an error with %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Start: %v; want %q in it", err, want)
	}
	requireThreadsOutside(t, name)
	if procs, err := g.Procs(); err == nil && len(procs) > 0 {
		t.Errorf("%s holds %v after a failed start", g.Path(), procs)
	}
	if err := g.Remove(); err != nil {
		t.Fatalf("Remove after a failed start: %v", err)
	}
	requireNoGroup(t, name)
}

// The floor holds what MinCeiling's measurements were made with. (Not this
// test binary as the child: under -race its shadow memory alone is more.)
func TestStartFloorHoldsATrivialProcess(t *testing.T) {
	cat := testchild.RequireTool(t, "apt-get install coreutils", "cat")
	sh := testchild.RequireTool(t, "apt-get install dash", "sh")
	for _, argv := range [][]string{{cat, "/dev/null"}, {sh, "-c", ":"}} {
		g, name := openName(t, Limits{Ceiling: MinCeiling})
		c := exec.Command(argv[0], argv[1:]...)
		c.Env = testchild.Environ()
		if raceEnabled {
			// A child forked from a race-built binary is charged for
			// the page tables of its shadow memory before it execs,
			// more than 8 MiB: so under -race a small shell joins the
			// group itself (cgroup.procs of each hierarchy) and execs
			// the program, as a child of guardrun's own binary would
			// be charged.
			join := ""
			for _, d := range Dirs(g) {
				join += "echo $$ > " + d + "/cgroup.procs && "
			}
			c = exec.Command(sh, append([]string{"-c", join + `exec "$@"`, "sh"}, argv...)...)
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
		} else if err := g.Start(c); err != nil {
			t.Fatalf("%v at %s: %v", argv, FormatSize(MinCeiling), err)
		}
		requireThreadsOutside(t, name)
		if err := c.Wait(); err != nil {
			t.Errorf("%v at %s: %v", argv, FormatSize(MinCeiling), err)
		}
		s, err := g.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if s.OOMKills != 0 {
			t.Errorf("%v at %s: oom_kill %d", argv, FormatSize(MinCeiling), s.OOMKills)
		}
		t.Logf("%s: %v peaked at %s of %s", g.Backend(), argv, FormatSize(s.Peak), FormatSize(s.Ceiling))
		if err := g.Remove(); err != nil {
			t.Fatal(err)
		}
		requireNoGroup(t, name)
	}
}

func TestStartFloorRefusedBeforeAnythingIsMade(t *testing.T) {
	h := Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	name := gfName(t)
	for _, max := range []uint64{256, 1 << 10, MinCeiling - 1} {
		_, err := Open(Options{Name: name, Backend: h.Version(), Limits: Limits{Ceiling: max}})
		if err == nil || !strings.Contains(err.Error(), "cannot hold a process (the least is 8 MiB)") {
			t.Errorf("Open with --max %d: %v; want it refused", max, err)
		}
		requireNoGroup(t, name)
	}
}

func TestStartOpenRefusedLimitLeavesNoGroup(t *testing.T) {
	h := Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	name := gfName(t)
	// pids.max takes at most PID_MAX_LIMIT (2^22); the kernel refuses more
	// with EINVAL after the group's directories are made.
	_, err := Open(Options{Name: name, Backend: h.Version(), Limits: Limits{Ceiling: 64 << 20, PidsMax: 1 << 40}})
	if err == nil || !strings.Contains(err.Error(), "invalid argument") {
		t.Errorf("Open with pids.max 2^40: %v; want the kernel's EINVAL", err)
	}
	if err != nil && strings.Contains(err.Error(), "could not be removed") {
		t.Errorf("Open: %v", err)
	}
	requireNoGroup(t, name)
}

func TestStartCommandNotFoundLeavesNoGroup(t *testing.T) {
	g, name := openName(t, Limits{Ceiling: 64 << 20})
	// A path, so os/exec forks (from inside the group on v1) and the
	// execve itself fails.
	err := g.Start(exec.Command(filepath.Join(t.TempDir(), "gf-no-such-command")))
	failedStart(t, g, name, err, "no such file or directory")
}

func TestStartNotExecutableLeavesNoGroup(t *testing.T) {
	g, name := openName(t, Limits{Ceiling: 64 << 20})
	script := filepath.Join(t.TempDir(), "gf-not-executable")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := g.Start(exec.Command(script))
	failedStart(t, g, name, err, "permission denied")
}

func TestStartForkRefusedV1LeavesNoGroup(t *testing.T) {
	testchild.RequireCgroup(t, Discover().Version(), "v1")
	// On v1 the lent thread counts in pids.current while it forks: with
	// pids.max 1 the kernel refuses the fork (EAGAIN) inside the group.
	g, name := openName(t, Limits{Ceiling: 64 << 20, PidsMax: 1})
	c := exec.Command(testchild.Command("exit", "0")[0], testchild.Command("exit", "0")[1:]...)
	c.Env = testchild.Environ()
	err := g.Start(c)
	failedStart(t, g, name, err, "resource temporarily unavailable")
}

func TestStartMoveIntoGroupFailsV1LeavesNoGroup(t *testing.T) {
	testchild.RequireCgroup(t, Discover().Version(), "v1")
	for _, gone := range []string{"pids", "memory"} {
		t.Run(gone, func(t *testing.T) {
			g, name := openName(t, Limits{Ceiling: 64 << 20})
			v1 := g.(*v1Group)
			if v1.pids == "" {
				t.Skip("no v1 pids hierarchy")
			}
			// The thread joins pids, then memory: with pids gone the first
			// move fails, with memory gone the second, after the thread
			// already joined pids and must come back from there.
			dir := map[string]string{"pids": v1.pids, "memory": v1.mem}[gone]
			if err := syscall.Rmdir(dir); err != nil {
				t.Fatal(err)
			}
			c := exec.Command(testchild.Command("exit", "0")[0], testchild.Command("exit", "0")[1:]...)
			c.Env = testchild.Environ()
			err := g.Start(c)
			failedStart(t, g, name, err, "write \"")
			if c.Process != nil {
				t.Errorf("a child was started (pid %d) though the move failed", c.Process.Pid)
			}
		})
	}
}

func TestStartMoveBackFailsV1EndsTheThread(t *testing.T) {
	testchild.RequireCgroup(t, Discover().Version(), "v1")
	g, name := openName(t, Limits{Ceiling: 64 << 20})
	v1 := g.(*v1Group)
	// The way home leads to a memory group that does not exist: the write
	// fails and the thread is still in the child's memory group. It must
	// stay locked and end, and the child it forked must not outlive it.
	var tid string
	noHome := func(dirs []string) ([]string, error) {
		home, err := threadCgroups(dirs)
		if err == nil {
			home[0] = filepath.Join(filepath.Dir(home[0]), "gf-no-home")
		}
		tid = strconv.Itoa(syscall.Gettid())
		return home, err
	}
	c := exec.Command(testchild.Command("sleep", "1m")[0], testchild.Command("sleep", "1m")[1:]...)
	c.Env = testchild.Environ()
	err := v1.start(c, noHome)
	if _, serr := os.Stat("/proc/self/task/" + tid); !os.IsNotExist(serr) {
		t.Errorf("thread %s, which could not leave the group, is still alive (%v)", tid, serr)
	}
	if c.Process == nil {
		t.Errorf("no child was started")
	} else if testchild.Alive(c.Process.Pid) {
		t.Errorf("child %d of the stuck thread outlived it", c.Process.Pid)
	}
	failedStart(t, g, name, err, "not home")
}
