package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/testchild"
)

func TestMain(m *testing.M) {
	testchild.MaybeRun()
	os.Exit(m.Run())
}

// open makes a real group for this test on whatever this kernel offers
// (v1 on the host, v2 in the VM) and removes it afterwards.
func open(t testing.TB, l Limits) Group { return openAs(t, "grtest", "", l) }

// openAs makes a real group named PREFIX-TEST-PID on this kernel's memory
// controller (want: "v1", "v2" or "" for either) and, at the end, removes
// it and checks that every directory of it is gone.
func openAs(t testing.TB, prefix, want string, l Limits) Group {
	t.Helper()
	h := Discover()
	testchild.RequireCgroup(t, h.Version(), want)
	name := fmt.Sprintf("%s-%s-%d", prefix, strings.ReplaceAll(t.Name(), "/", "-"), os.Getpid())
	g, err := Open(Options{Name: name, Backend: h.Version(), Limits: l})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := g.Remove(); err != nil {
			t.Errorf("Remove: %v", err)
		}
		for _, d := range Dirs(g) {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("%s still exists after Remove", d)
			}
		}
	})
	return g
}

func child(mode string, args ...string) *exec.Cmd {
	argv := testchild.Command(mode, args...)
	c := exec.Command(argv[0], argv[1:]...)
	c.Env = testchild.Environ()
	c.Stderr = os.Stderr
	return c
}

func TestLimitsAreReadBack(t *testing.T) {
	g := open(t, Limits{Ceiling: 64 << 20, PidsMax: 64, High: 48 << 20})
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Ceiling != 64<<20 {
		t.Fatalf("limit reads %d, want %d", s.Ceiling, 64<<20)
	}
	pids, high := filepath.Join(g.Path(), pidsMax), filepath.Join(g.Path(), v2High)
	if v1, ok := g.(*v1Group); ok {
		pids, high = filepath.Join(v1.pids, pidsMax), filepath.Join(v1.mem, "memory.soft_limit_in_bytes")
	}
	if n, err := readUint(pids); err != nil || n != 64 {
		t.Fatalf("%s = %d, %v", pids, n, err)
	}
	if n, err := readUint(high); err != nil || n != 48<<20 {
		t.Fatalf("%s = %d, %v; want --high", high, n, err)
	}
}

func TestChildStartsInsideGroup(t *testing.T) {
	g := open(t, Limits{Ceiling: 256 << 20})
	c := child("cgroup")
	var out strings.Builder
	c.Stdout = &out
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	rel := "/guardrun/" + filepath.Base(g.Path())
	want := map[string]string{"v1": "memory:" + rel, "v2": "0::" + rel}[g.Backend()]
	if !strings.Contains(out.String(), want) {
		t.Fatalf("child's /proc/self/cgroup lacks %q:\n%s", want, out.String())
	}
	// On v1 guardrun lends the child one of its threads to fork from; the
	// thread must be back home, or guardrun would sit in the child's group.
	procs, _ := readPids(filepath.Join(g.Path(), cgroupProcs))
	for _, p := range procs {
		if p == os.Getpid() {
			t.Fatalf("guardrun (%d) is still in %s", p, g.Path())
		}
	}
}

func TestOOMKillAtCeiling(t *testing.T) {
	requireOOMKillAtCeiling(t, open(t, Limits{Ceiling: 64 << 20}))
}

// requireOOMKillAtCeiling starts a leaking child in g, a group with a
// 64 MiB ceiling, and requires the kernel's OOM kill at that ceiling:
// SIGKILL, oom_kill counted, the peak at the ceiling.
func requireOOMKillAtCeiling(t *testing.T, g Group) {
	t.Helper()
	c := child("leak", "4")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	err := c.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("leaking child ended with %v, want SIGKILL", err)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.OOMKills < 1 {
		t.Fatalf("oom_kill = %d, want >= 1", s.OOMKills)
	}
	if s.Peak < 60<<20 || s.Peak > 64<<20+4096 {
		t.Fatalf("peak %d is not at the 64 MiB ceiling", s.Peak)
	}
}

func TestChildUnderCeilingExitsNormally(t *testing.T) {
	g := open(t, Limits{Ceiling: 128 << 20})
	c := child("alloc", "32")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	s, _ := g.Stats()
	if s.OOMKills != 0 || s.Peak < 32<<20 {
		t.Fatalf("stats %+v: want no OOM kill and a peak of at least 32 MiB", s)
	}
}

func TestKillTakesGrandchildren(t *testing.T) {
	g := open(t, Limits{Ceiling: 256 << 20})
	pidfile := filepath.Join(t.TempDir(), "pids")
	c := child("tree", "3", pidfile)
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(testchild.WaitFile(t, pidfile)) {
		p, _ := strconv.Atoi(f)
		pids = append(pids, p)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if err := g.Remove(); err != nil { // waits for the group to empty
		t.Fatal(err)
	}
	for _, p := range pids {
		if testchild.Alive(p) {
			t.Errorf("grandchild %d survived the group kill", p)
		}
	}
}

func TestStaleGroupIsCleaned(t *testing.T) {
	h := Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	name := fmt.Sprintf("grtest-stale-%d", os.Getpid())
	old, err := Open(Options{Name: name, Backend: h.Version(), Limits: Limits{Ceiling: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	c := child("sleep", "1h")
	if err := old.Start(c); err != nil {
		t.Fatal(err)
	}
	go c.Wait()
	// A guardrun killed by SIGKILL leaves its group and child, and the
	// hold on its name; its locks go with it. Dropping them is what the
	// kernel does then.
	dropLocks(old)
	g, err := Open(Options{Name: name, Backend: h.Version(), Limits: Limits{Ceiling: 32 << 20}})
	if err != nil {
		t.Fatalf("Open over a stale group: %v", err)
	}
	defer func() {
		if err := g.Remove(); err != nil {
			t.Error(err)
		}
	}()
	if testchild.Alive(c.Process.Pid) {
		t.Fatalf("the stale group's process %d is alive", c.Process.Pid)
	}
	if s, _ := g.Stats(); s.Ceiling != 32<<20 || s.Peak > 1<<20 {
		t.Fatalf("the group was not made anew: %+v", s)
	}
}

// dropLocks does to g's locks what the kernel does when its guardrun is
// killed: the group's and the name's hold go; the directories stay.
func dropLocks(g Group) {
	switch g := g.(type) {
	case *v1Group:
		g.lock.Close()
		g.hold.lock.Close()
	case *v2Group:
		g.lock.Close()
		g.hold.lock.Close()
	}
}

func TestLiveNameIsBusy(t *testing.T) {
	g := open(t, Limits{Ceiling: 64 << 20})
	_, err := Open(Options{Name: filepath.Base(g.Path()), Backend: g.Backend(), Limits: Limits{Ceiling: 64 << 20}})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("second Open of a live name: %v, want ErrBusy", err)
	}
}

func TestPidsMaxStopsForks(t *testing.T) {
	g := open(t, Limits{Ceiling: 256 << 20, PidsMax: 12})
	c := child("tree", "20", filepath.Join(t.TempDir(), "pids"))
	var out strings.Builder
	c.Stderr = &out
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err == nil {
		t.Fatal("20 grandchildren started under pids.max 12")
	}
	if !strings.Contains(out.String(), "resource temporarily unavailable") {
		t.Fatalf("fork did not fail with EAGAIN: %s", out.String())
	}
}

func TestNoCgroupBackendKillsAtCeiling(t *testing.T) {
	g, err := Open(Options{Name: "grtest-none", Backend: "none", Limits: Limits{Ceiling: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if NoCgroupReason(g) == "" {
		t.Fatal("the none backend must say why it is used")
	}
	c := child("leak", "2")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	err = c.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("leaking child ended with %v, want SIGKILL", err)
	}
	if s, _ := g.Stats(); s.OOMKills != 1 || s.Peak <= 64<<20 {
		t.Fatalf("stats %+v: want one kill past the ceiling", s)
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"app", "node-1", "my_app.v2", "a@b:c", strings.Repeat("x", 128)} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", "/abs", ".hidden", "a b", "tab\there", "nl\n", "bell\a", strings.Repeat("x", 129), "bad\xff"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		}
	}
}

func TestNameFor(t *testing.T) {
	for in, want := range map[string]string{
		"node":              "node",
		"/usr/bin/node":     "node",
		"./build.sh":        "build.sh",
		"..":                "run",
		"":                  "run",
		"my prog":           "my-prog",
		"/x/.hidden":        "hidden",
		"weird\x01name\xff": "weird-name-",
	} {
		if got := NameFor(in); got != want {
			t.Errorf("NameFor(%q) = %q, want %q", in, got, want)
		}
		if err := ValidName(NameFor(in)); err != nil {
			t.Errorf("NameFor(%q) is not a valid name: %v", in, err)
		}
	}
}

// waitNotice waits (bounded) for a notice of kind want.
func waitNotice(t *testing.T, w *Watcher, want Notice) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case n := <-w.C:
			if n == want {
				return
			}
		case <-timeout:
			t.Fatalf("no %s notice within 20s", want)
		}
	}
}

func TestWatchThresholdFiresBeforeTheCeiling(t *testing.T) {
	g := open(t, Limits{Ceiling: 256 << 20})
	w, err := g.Watch(WatchSpec{Threshold: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := child("leak", "1")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	defer func() { g.Kill(); c.Wait() }()
	waitNotice(t, w, Threshold)
	s, _ := g.Stats()
	if s.OOMKills != 0 || s.Current < 60<<20 {
		t.Fatalf("notice at %+v: want usage near 64 MiB and no OOM kill", s)
	}
}

func TestWatchPressureV2(t *testing.T) {
	h := Discover()
	testchild.RequireCgroup(t, h.Version(), "v2")
	// memory.high far below what the child touches: the kernel throttles
	// it in reclaim, which is a memory stall, which PSI reports.
	g := open(t, Limits{Ceiling: 256 << 20, High: 16 << 20})
	w, err := g.Watch(WatchSpec{Trigger: "some 10000 500000"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := child("leak", "2")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	defer func() { g.Kill(); c.Wait() }()
	waitNotice(t, w, Pressure)
}

func TestWatchPressureRefusedOffV2(t *testing.T) {
	g, err := Open(Options{Name: "grtest-none-psi", Backend: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if _, err := g.Watch(WatchSpec{Trigger: "some 10000 500000"}); err == nil {
		t.Fatal("a PSI trigger without cgroup v2 was accepted")
	}
}

// A sentinel's Reclaim empties and removes a dead run's group, but never
// one a live guardrun holds.
func TestReclaim(t *testing.T) {
	h := Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	name := fmt.Sprintf("grtest-reclaim-%d", os.Getpid())
	g, err := Open(Options{Name: name, Backend: h.Version(), Limits: Limits{Ceiling: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	c := child("sleep", "1h")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	go c.Wait()
	dirs := Dirs(g)
	if len(dirs) == 0 || dirs[0] != g.Path() {
		t.Fatalf("Dirs %v, path %s", dirs, g.Path())
	}
	// Held: left alone (the attempt gives up after about a second).
	if err := Reclaim(dirs[0], dirs[1:]...); err == nil || !testchild.Alive(c.Process.Pid) {
		t.Fatalf("a held group was reclaimed: %v", err)
	}
	dropLocks(g)
	if err := Reclaim(dirs[0], dirs[1:]...); err != nil {
		t.Fatal(err)
	}
	if hold := filepath.Join(filepath.Dir(dirs[0]), holdPrefix+name); fileExists(hold) {
		t.Errorf("the dead run's hold %s is left", hold)
	}
	if testchild.Alive(c.Process.Pid) {
		t.Errorf("process %d outlived Reclaim", c.Process.Pid)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is left: %v", d, err)
		}
	}
	if err := Reclaim(dirs[0], dirs[1:]...); err != nil {
		t.Errorf("a second Reclaim: %v", err)
	}
}
