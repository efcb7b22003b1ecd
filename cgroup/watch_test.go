package cgroup

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/testchild"
	"golang.org/x/sys/unix"
)

// watchChildEnv makes the test binary one of the children below instead
// of a test. The VM has no shell, dd or cat, so the file-heavy child and
// the parent of OOM-killed workers are this binary too. init runs before
// TestMain's testchild.MaybeRun, as backend_test.go's hook does.
const watchChildEnv = "GUARDRUN_TEST_WATCH_CHILD"

func init() {
	if os.Getenv(watchChildEnv) == "" {
		return
	}
	os.Unsetenv(watchChildEnv) // the workers it starts are testchild's
	args := os.Args[1:]
	for len(args) > 0 && args[0] != "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "watch child: no mode")
		os.Exit(2)
	}
	os.Exit(watchChildMain(args[1], args[2:]))
}

func watchChildMain(mode string, args []string) int {
	switch mode {
	case "files": // files DIR MIB READY: write MIB of file data in DIR, read it back twice, say so, sleep
		mib, _ := strconv.Atoi(args[1])
		data := filepath.Join(args[0], "data")
		f, err := os.Create(data)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i)
		}
		for range mib {
			if _, err := f.Write(buf); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		f.Close()
		// Read twice: a page read again is promoted to the active list,
		// and is still page cache (see WorkingSet).
		for range 2 {
			f, err := os.Open(data)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			io.CopyBuffer(io.Discard, f, buf)
			f.Close()
		}
		replaceFile(args[2], "done")
		time.Sleep(time.Hour)
		return 0
	case "oom-parent": // oom-parent N READY: run N leaking workers, each to its death, say how they ended, sleep
		n, _ := strconv.Atoi(args[0])
		var ends []string
		for range n {
			argv := testchild.Command("leak", "4")
			c := exec.Command(argv[0], argv[1:]...)
			c.Env = testchild.Environ()
			ends = append(ends, fmt.Sprint(c.Run()))
		}
		replaceFile(args[1], strings.Join(ends, "\n"))
		time.Sleep(time.Hour)
		return 0
	}
	fmt.Fprintln(os.Stderr, "watch child: unknown mode", mode)
	return 2
}

// replaceFile replaces path at once, so that no reader sees it half
// written.
func replaceFile(path, s string) error {
	if err := os.WriteFile(path+".tmp", []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

func watchChild(mode string, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	c := exec.Command(exe, append([]string{"-test.run=^$", "--", mode}, args...)...)
	c.Env = append(os.Environ(), watchChildEnv+"=1")
	c.Stderr = os.Stderr
	return c
}

// startIn starts c in g and, at the end, kills and reaps it (before the
// group is removed).
func startIn(t *testing.T, g Group, c *exec.Cmd) {
	t.Helper()
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Kill(); c.Wait() })
}

// watchOrFail calls Watch and fails the test if it does not return
// within 10 s: Watch used to hang on its own error paths.
func watchOrFail(t *testing.T, g Group, s WatchSpec) (*Watcher, error) {
	t.Helper()
	type result struct {
		w   *Watcher
		err error
	}
	ch := make(chan result, 1)
	go func() {
		w, err := g.Watch(s)
		ch <- result{w, err}
	}()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.w, r.err
	case <-timer.C:
		t.Fatalf("Watch(%+v) did not return within 10s", s)
	}
	return nil, nil
}

// closeOrFail closes w and fails the test if Close takes over 5 s.
func closeOrFail(t *testing.T, w *Watcher) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		w.Close()
		close(done)
	}()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatal("Watcher.Close did not return within 5s")
	}
}

// waitLooks waits (bounded) until the watcher has read the working set
// n more times than it had when called.
func waitLooks(t *testing.T, w *Watcher, n uint64) {
	t.Helper()
	want := w.looks.Load() + n
	for i := 0; w.looks.Load() < want; i++ {
		if i == 2000 {
			t.Fatalf("the watcher read the working set %d times in 20s, want %d", w.looks.Load()-(want-n), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noNotice fails the test if a notice of kind n is pending.
func noNotice(t *testing.T, w *Watcher, n Notice) {
	t.Helper()
	for {
		select {
		case got := <-w.C:
			if got == n {
				t.Fatalf("unexpected %s notice", n)
			}
		default:
			return
		}
	}
}

// fileDir is a directory whose files are page cache that is not shmem.
// The VM's /tmp is tmpfs, whose pages are shmem and rightly count in the
// working set, so there a ramfs is mounted over it. ramfs pages are
// memory.stat "file" but not "shmem" (they are unevictable, which
// WorkingSet does not look at); for this test they are what a disk's
// page cache would be.
func fileDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		return dir
	}
	if err := unix.Mount("ramfs", dir, "ramfs", 0, ""); err != nil {
		t.Fatalf("%s is tmpfs (shmem), and mounting a ramfs there failed: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// highUntouched checks that the watch wrote no memory.high (v2) and no
// soft limit (v1, where Limits.High goes).
func highUntouched(t *testing.T, g Group) {
	t.Helper()
	if g.Backend() == "v2" {
		b, err := os.ReadFile(filepath.Join(g.Path(), v2High))
		if err != nil || strings.TrimSpace(string(b)) != "max" {
			t.Fatalf("memory.high reads %q (%v), want max: a watch must not throttle the group", b, err)
		}
		return
	}
	soft, err := readUint(filepath.Join(g.Path(), "memory.soft_limit_in_bytes"))
	if err != nil || soft < 1<<62 {
		t.Fatalf("memory.soft_limit_in_bytes reads %d (%v), want unlimited", soft, err)
	}
}

// Page cache lifts raw usage past the threshold; the working set stays
// under it, so no Threshold notice comes, and nothing throttles the child.
func TestWatchThresholdIgnoresPageCache(t *testing.T) {
	const threshold = 64 << 20
	g := openAs(t, "gw", "", Limits{Ceiling: 512 << 20})
	w, err := watchOrFail(t, g, WatchSpec{Threshold: threshold, OOM: true})
	if err != nil {
		t.Fatal(err)
	}
	defer closeOrFail(t, w)
	ready := filepath.Join(t.TempDir(), "ready")
	startIn(t, g, watchChild("files", fileDir(t), strconv.Itoa(3*threshold>>20), ready))
	testchild.WaitFile(t, ready)
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Current < threshold || s.WorkingSet >= threshold {
		t.Fatalf("after 192 MiB of file data: usage %d MiB, working set %d MiB; want usage over 64 MiB and the working set under it",
			s.Current>>20, s.WorkingSet>>20)
	}
	// Two reads of the working set with the data in place: on v1 the
	// usage eventfd fired at the raw crossing and the watcher kept
	// polling the working set; on v2 it polls memory.current.
	waitLooks(t, w, 2)
	noNotice(t, w, Threshold)
	highUntouched(t, g)
	t.Logf("%s: usage %d MiB, cache %d MiB, working set %d MiB, %d working-set reads: no notice",
		g.Backend(), s.Current>>20, s.Cache>>20, s.WorkingSet>>20, w.looks.Load())
}

// An anonymous leak crosses with its working set: one notice, and the
// working set is at the threshold when it comes. Another comes only
// after a new crossing.
func TestWatchThresholdOnAnonymousLeak(t *testing.T) {
	const threshold = 64 << 20
	g := openAs(t, "gw", "", Limits{Ceiling: 512 << 20})
	w, err := watchOrFail(t, g, WatchSpec{Threshold: threshold})
	if err != nil {
		t.Fatal(err)
	}
	defer closeOrFail(t, w)
	c := child("ramp", "1", "20ms") // mmap, so the race detector's shadow does not add to it
	startIn(t, g, c)
	waitNotice(t, w, Threshold)
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.WorkingSet < threshold {
		t.Fatalf("Threshold notice with the working set at %d MiB, under the 64 MiB threshold", s.WorkingSet>>20)
	}
	waitLooks(t, w, 2)
	noNotice(t, w, Threshold) // still over: edge-triggered
	highUntouched(t, g)
}

// A parent whose workers are OOM-killed one after another lives on, and
// hears of each kill while it runs. Notices may coalesce, but after the
// last kill a notice comes whose Stats show every kill. On v1 the test
// also counts the kernel's own memory.oom_control eventfd signals.
func TestWatchOOMKillOfAWorker(t *testing.T) {
	const workers = 3
	g := openAs(t, "gw", "", Limits{Ceiling: 128 << 20})
	w, err := watchOrFail(t, g, WatchSpec{OOM: true})
	if err != nil {
		t.Fatal(err)
	}
	defer closeOrFail(t, w)
	efd := -1
	if v1, ok := g.(*v1Group); ok {
		fd, err := registerEvent(v1.mem, v1OOMCtl, "")
		if err != nil {
			t.Fatal(err)
		}
		efd = fd
		defer unix.Close(efd)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	parent := watchChild("oom-parent", strconv.Itoa(workers), ready)
	startIn(t, g, parent)
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	var notices int
	for seen := uint64(0); seen < workers; {
		select {
		case n := <-w.C:
			if n != OOMKill {
				t.Fatalf("%s notice, want oom_kill", n)
			}
			notices++
			s, err := g.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if !testchild.Alive(parent.Process.Pid) {
				t.Fatalf("the parent %d is dead at the OOMKill notice", parent.Process.Pid)
			}
			seen = s.OOMKills
		case <-timeout.C:
			t.Fatalf("after %d notices, no notice showed %d kills within 60s", notices, workers)
		}
	}
	if ends := testchild.WaitFile(t, ready); strings.Count(ends, "signal: killed") != workers {
		t.Fatalf("the workers ended so:\n%s", ends)
	}
	if !testchild.Alive(parent.Process.Pid) {
		t.Fatal("the parent died")
	}
	s, _ := g.Stats()
	if s.OOMKills != workers {
		t.Fatalf("oom_kill %d after %d workers", s.OOMKills, workers)
	}
	t.Logf("%s: %d OOMKill notices for %d kills", g.Backend(), notices, s.OOMKills)
	if efd >= 0 {
		var buf [8]byte
		n, err := unix.Read(efd, buf[:])
		if n != 8 {
			t.Fatalf("read the OOM eventfd: %d, %v", n, err)
		}
		signals := uint64(buf[0]) | uint64(buf[1])<<8 | uint64(buf[2])<<16 | uint64(buf[3])<<24
		t.Logf("v1: the memory.oom_control eventfd was signalled %d times for %d kills", signals, s.OOMKills)
		if signals < s.OOMKills {
			t.Fatalf("the OOM eventfd was signalled %d times for %d kills: a kill would go unnoticed", signals, s.OOMKills)
		}
	}
}

// Without a cgroup the sampler sends both: Threshold once as the tree's
// RSS crosses, OOMKill when it kills the tree at the ceiling.
func TestWatchNoCgroupThresholdAndOOMKill(t *testing.T) {
	g, err := Open(Options{Name: "gw-none", Backend: "none", Limits: Limits{Ceiling: 96 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	w, err := watchOrFail(t, g, WatchSpec{Threshold: 48 << 20, OOM: true})
	if err != nil {
		t.Fatal(err)
	}
	defer closeOrFail(t, w)
	c := child("ramp", "2", "10ms")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	got := map[Notice]int{}
	for len(w.C) > 0 {
		got[<-w.C]++
	}
	if got[Threshold] != 1 || got[OOMKill] != 1 {
		t.Fatalf("notices %v, want one threshold and one oom_kill", got)
	}
}

// send drops a notice only while one of its kind is pending.
func TestWatcherSendKeepsEachKind(t *testing.T) {
	w := newWatcher()
	for range 10 {
		w.send(Threshold)
	}
	w.send(OOMKill)
	w.send(Pressure)
	w.send(OOMKill)
	got := map[Notice]int{}
	for len(w.C) > 0 {
		got[<-w.C]++
	}
	if got[OOMKill] == 0 || got[Pressure] == 0 || got[Threshold] == 0 {
		t.Fatalf("pending notices %v: a kind was dropped with none of it pending", got)
	}
}

// openFds maps this process's open fds to what they are.
func openFds(t *testing.T) map[string]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]string{}
	for _, e := range ents {
		fds[e.Name()], _ = os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
	}
	return fds
}

// watchFails checks one error path: Watch returns an error (within a
// bound), no watcher, and leaves no fd open and no goroutine running.
func watchFails(t *testing.T, g Group, s WatchSpec, want string) {
	t.Helper()
	watchFailsWithFds(t, g, s, -1, want)
}

// watchFailsWithFds is watchFails with Watch allowed to hold at most fds
// descriptors at once (see limitFds); -1 for no limit.
func watchFailsWithFds(t *testing.T, g Group, s WatchSpec, fds int, want string) {
	t.Helper()
	os.ReadFile("/proc/self/stat") // the runtime's own fds, opened on first use
	before, goroutines := openFds(t), runtime.NumGoroutine()
	w, err := func() (*Watcher, error) {
		if fds >= 0 {
			defer limitFds(t, fds)()
		}
		return watchOrFail(t, g, s)
	}()
	if err == nil {
		closeOrFail(t, w)
		t.Fatalf("Watch(%+v) succeeded, want an error", s)
	}
	if w != nil {
		t.Fatalf("Watch(%+v) returned a watcher with its error", s)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("Watch(%+v): %v, want it to say %q", s, err, want)
	}
	closeOrFail(t, w) // nil: a no-op
	for fd, what := range openFds(t) {
		if before[fd] != what {
			t.Errorf("Watch(%+v) failed and left fd %s open (%s)", s, fd, what)
		}
	}
	// Watch's goroutine starts only on success; watchOrFail's has ended
	// or is ending.
	for i := 0; runtime.NumGoroutine() > goroutines; i++ {
		if i == 500 {
			t.Fatalf("%d goroutines after a failed Watch, %d before", runtime.NumGoroutine(), goroutines)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("%+v: %v", s, err)
}

// limitFds lowers this process's RLIMIT_NOFILE so that it can hold at
// most n descriptors more than it holds now, and returns what puts the
// limit back. The kernel gives a new descriptor the lowest free number
// and refuses one at or over the limit (EMFILE), so the limit is the
// number of the (n+1)th free descriptor. Nothing else in the test binary
// opens files meanwhile: the package's tests do not run in parallel.
func limitFds(t *testing.T, n int) (restore func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fd, free := 0, 0
	for ; ; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == unix.EBADF {
			if free == n {
				break
			}
			free++
		}
	}
	if uint64(fd) >= old.Cur {
		t.Fatalf("descriptor %d is over RLIMIT_NOFILE %d already", fd, old.Cur)
	}
	lim := old
	lim.Cur = uint64(fd)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
			t.Fatalf("put RLIMIT_NOFILE back to %d: %v", old.Cur, err)
		}
	}
}

// removedGW is a real group that Remove took away under its Group.
func removedGW(t *testing.T) Group {
	g := openAs(t, "gw", "", Limits{Ceiling: 64 << 20})
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestWatchErrorsV1(t *testing.T) {
	h := Discover()
	testchild.RequireCgroup(t, h.Version(), "v1")
	t.Run("pressure trigger", func(t *testing.T) {
		watchFails(t, openAs(t, "gw", "", Limits{Ceiling: 64 << 20}), WatchSpec{Threshold: 1 << 20, OOM: true, Trigger: "some 10000 500000"}, "need cgroup v2")
	})
	t.Run("threshold on a removed group", func(t *testing.T) {
		watchFails(t, removedGW(t), WatchSpec{Threshold: 1 << 20, OOM: true}, "no such file")
	})
	t.Run("oom on a removed group", func(t *testing.T) {
		watchFails(t, removedGW(t), WatchSpec{OOM: true}, "no such file")
	})
	// The kernel refuses no well-formed registration in a real group, so
	// these register in a v1Group over plain files: where
	// cgroup.event_control is a directory, its write fails (EISDIR)
	// after the eventfd is made; where memory.oom_control is missing,
	// the threshold is registered (to a plain file) and the OOM watch
	// fails after it, so the threshold's eventfd must be closed.
	t.Run("threshold with a bad event_control", func(t *testing.T) {
		watchFails(t, fakeV1(t, true, true), WatchSpec{Threshold: 1 << 20}, "is a directory")
	})
	t.Run("oom with a bad event_control", func(t *testing.T) {
		watchFails(t, fakeV1(t, true, true), WatchSpec{OOM: true}, "register an OOM eventfd")
	})
	t.Run("oom after a threshold", func(t *testing.T) {
		watchFails(t, fakeV1(t, false, false), WatchSpec{Threshold: 1 << 20, OOM: true}, "memory.oom_control")
	})
	// Out of descriptors, in a real group, at each one Watch makes. A
	// registration holds three at once: the eventfd, the control file
	// and cgroup.event_control, the last two closed after it. So: the
	// threshold's eventfd; memory.usage_in_bytes (the eventfd must be
	// closed again); cgroup.event_control, a real write that fails;
	// oom_control opened for its count; the OOM registration's, after a
	// threshold was registered. (The watcher's pipe needs no more than a
	// registration did, so only v2's PSI trigger can run out at it.)
	for _, tc := range []struct {
		name string
		s    WatchSpec
		fds  int
		want string
	}{
		{"threshold without a descriptor for its eventfd", WatchSpec{Threshold: 1 << 20}, 0, "eventfd: too many open files"},
		{"threshold without a descriptor for memory.usage_in_bytes", WatchSpec{Threshold: 1 << 20}, 1, v1Usage + ": too many open files"},
		{"threshold without a descriptor for cgroup.event_control", WatchSpec{Threshold: 1 << 20}, 2, v1EventControl + ": too many open files"},
		{"oom without a descriptor to read oom_kill", WatchSpec{OOM: true}, 0, "read oom_kill from"},
		{"oom without a descriptor after a threshold", WatchSpec{Threshold: 1 << 20, OOM: true}, 3, "register an OOM eventfd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			watchFailsWithFds(t, openAs(t, "gw", "", Limits{Ceiling: 64 << 20}), tc.s, tc.fds, tc.want)
		})
	}
}

// fakeV1 is a v1Group over plain files in a temporary directory.
func fakeV1(t *testing.T, evctlIsDir, oomCtl bool) *v1Group {
	t.Helper()
	root := t.TempDir()
	rel := fmt.Sprintf("gw-fake-%d", os.Getpid())
	mem := filepath.Join(root, "memory", rel)
	if err := os.MkdirAll(mem, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{v1Usage: "0\n", memoryStat: "total_cache 0\n"}
	if oomCtl {
		files[v1OOMCtl] = "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"
	}
	if !evctlIsDir {
		files[v1EventControl] = ""
	} else if err := os.Mkdir(filepath.Join(mem, v1EventControl), 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range files {
		if err := os.WriteFile(filepath.Join(mem, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &v1Group{mem: mem}
}

func TestWatchErrorsV2(t *testing.T) {
	h := Discover()
	testchild.RequireCgroup(t, h.Version(), "v2")
	t.Run("trigger the kernel refuses", func(t *testing.T) {
		// The window must be 500 ms to 10 s (psi.rst): the threshold and
		// OOM watches are set up first and must be closed again.
		g := openAs(t, "gw", "", Limits{Ceiling: 64 << 20})
		watchFails(t, g, WatchSpec{Threshold: 1 << 20, OOM: true, Trigger: "some 1000 1000"}, "invalid argument")
		highUntouched(t, g)
	})
	t.Run("threshold on a removed group", func(t *testing.T) {
		watchFails(t, removedGW(t), WatchSpec{Threshold: 1 << 20, OOM: true}, "no such file")
	})
	t.Run("oom on a removed group", func(t *testing.T) {
		watchFails(t, removedGW(t), WatchSpec{OOM: true, Trigger: "some 10000 500000"}, "no such file")
	})
	t.Run("trigger on a removed group", func(t *testing.T) {
		watchFails(t, removedGW(t), WatchSpec{Trigger: "some 10000 500000"}, "no such file")
	})
	// Out of descriptors at each one Watch makes: the inotify instance;
	// memory.events opened for its oom_kill count, after the inotify
	// watch was added; the watcher's pipe, after the PSI trigger was
	// written (its fd must be closed again, and the trigger with it).
	for _, tc := range []struct {
		name string
		s    WatchSpec
		fds  int
		want string
	}{
		{"oom without a descriptor for inotify", WatchSpec{OOM: true}, 0, "inotify: too many open files"},
		{"oom without a descriptor to read oom_kill", WatchSpec{OOM: true}, 1, "read oom_kill from"},
		{"no descriptors for the watcher's pipe", WatchSpec{Trigger: "some 10000 500000"}, 1, "watcher pipe: too many open files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := openAs(t, "gw", "", Limits{Ceiling: 64 << 20})
			watchFailsWithFds(t, g, tc.s, tc.fds, tc.want)
			highUntouched(t, g)
		})
	}
}

// Watch's v2 error paths over plain files, so that they run without root
// and on a v1 host too (the PSI trigger's need the kernel: see
// TestWatchErrorsV2). The watcher's pipe is the last descriptor Watch
// makes, and a v2 threshold holds none (it polls memory.current): with one
// descriptor left the read of memory.current passes and the pipe, which
// needs two, fails.
func TestWatchErrorsV2OverFiles(t *testing.T) {
	const events = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		s     WatchSpec
		fds   int
		want  string
	}{
		{"threshold without memory.current", nil, WatchSpec{Threshold: 1 << 20}, -1, v2Current + ": no such file"},
		{"oom without memory.events", map[string]string{v2Current: "0\n"}, WatchSpec{Threshold: 1 << 20, OOM: true}, -1, "inotify on"},
		{"oom without a descriptor for inotify", map[string]string{v2Events: events}, WatchSpec{OOM: true}, 0, "inotify: too many open files"},
		{"oom without a descriptor to read oom_kill", map[string]string{v2Events: events}, WatchSpec{OOM: true}, 1, "read oom_kill from"},
		{"trigger without memory.pressure", map[string]string{v2Events: events}, WatchSpec{OOM: true, Trigger: "some 10000 500000"}, -1, v2Pressure + ": no such file"},
		{"no descriptors for the watcher's pipe", map[string]string{v2Current: "0\n"}, WatchSpec{Threshold: 1 << 20}, 1, "watcher pipe: too many open files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &v2Group{dir: t.TempDir()}
			for f, v := range tc.files {
				if err := os.WriteFile(filepath.Join(g.dir, f), []byte(v), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			watchFailsWithFds(t, g, tc.s, tc.fds, tc.want)
			if tc.fds >= 0 {
				// With descriptors to spare, the same files watch.
				w, err := watchOrFail(t, g, tc.s)
				if err != nil {
					t.Fatalf("Watch with descriptors to spare: %v", err)
				}
				closeOrFail(t, w)
			}
		})
	}
}

func TestWatchErrorsNone(t *testing.T) {
	g, err := Open(Options{Name: "gw-none-errors", Backend: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	watchFails(t, g, WatchSpec{Threshold: 1 << 20, OOM: true, Trigger: "some 10000 500000"}, "need cgroup v2")
}

// A group removed under a live watcher (the supervisor removes the group,
// then closes the watcher): the watches go quiet, send nothing, do not
// spin, and Close returns.
func TestWatchGroupRemovedUnderIt(t *testing.T) {
	g := openAs(t, "gw", "", Limits{Ceiling: 64 << 20})
	s := WatchSpec{Threshold: 1 << 20, OOM: true}
	if g.Backend() == "v2" {
		s.Trigger = "some 10000 500000"
	}
	w, err := watchOrFail(t, g, s)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOrFail(t, w)
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	wakes := w.wakes.Load()
	// Not a synchronisation: the window in which a spinning loop would
	// wake thousands of times, and a quiet one a few.
	timer := time.NewTimer(300 * time.Millisecond)
	defer timer.Stop()
	select {
	case n := <-w.C:
		t.Fatalf("%s notice from a removed group", n)
	case <-timer.C:
	}
	if n := w.wakes.Load() - wakes; n > 10 {
		t.Fatalf("the watcher woke %d times in 300ms after its group was removed", n)
	}
	closeOrFail(t, w)
	select {
	case <-w.done:
	default:
		t.Fatal("Close returned with the watcher's goroutine running")
	}
}

// setFile sets a fake kernel file.
func setFile(t *testing.T, path, s string) {
	t.Helper()
	if err := replaceFile(path, s); err != nil {
		t.Fatal(err)
	}
}

// signal does what the kernel does to a registered eventfd.
func signal(t *testing.T, fd int) {
	t.Helper()
	one := [8]byte{1}
	if _, err := unix.Write(fd, one[:]); err != nil {
		t.Fatal(err)
	}
}

// The v1 threshold's states, which a real group cannot be steered
// through on cue: over plain files whose figures the test sets, with the
// test signalling the eventfd as the kernel would at the raw crossing.
func TestWatchV1ThresholdFollowsTheWorkingSet(t *testing.T) {
	const threshold = 64 << 20
	g := fakeV1(t, false, true)
	// memory.stat first: the watcher's first look may come at any
	// moment, and usage over the threshold with the old, empty stat
	// would read as a working set over it (a race seen under -race).
	set := func(usage, cache uint64) {
		setFile(t, filepath.Join(g.mem, memoryStat), fmt.Sprintf("total_cache %d\ntotal_shmem 0\ntotal_inactive_file %d\n", cache, cache))
		setFile(t, filepath.Join(g.mem, v1Usage), fmt.Sprintln(usage))
	}
	set(0, 0)
	w, err := watchOrFail(t, g, WatchSpec{Threshold: threshold})
	if err != nil {
		t.Fatal(err)
	}
	defer closeOrFail(t, w)
	efd := w.watches[0].fd
	// Raw usage crosses, held up by page cache: one signal, then the
	// watcher polls the working set on its own.
	set(100<<20, 90<<20)
	signal(t, efd)
	waitLooks(t, w, 2)
	noNotice(t, w, Threshold)
	// The working set crosses, with no signal: raw usage did not move.
	set(100<<20, 0)
	waitNotice(t, w, Threshold)
	waitLooks(t, w, 2)
	noNotice(t, w, Threshold) // still over: one notice per crossing
	// Under again while raw usage stays over, then over again.
	set(100<<20, 90<<20)
	waitLooks(t, w, 2)
	noNotice(t, w, Threshold)
	set(100<<20, 0)
	waitNotice(t, w, Threshold)
}

// The v1 OOM eventfd fires before the kill is counted: a wake-up that
// reads the old count must look again until it rises.
func TestWatchV1OOMKillCountedAfterTheEvent(t *testing.T) {
	g := fakeV1(t, false, true)
	w, err := watchOrFail(t, g, WatchSpec{OOM: true})
	if err != nil {
		t.Fatal(err)
	}
	defer closeOrFail(t, w)
	wakes := w.wakes.Load()
	signal(t, w.watches[0].fd)
	for i := 0; w.wakes.Load() == wakes; i++ {
		if i == 1000 {
			t.Fatal("the watcher did not wake at the OOM event within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	noNotice(t, w, OOMKill) // it read oom_kill 0
	setFile(t, filepath.Join(g.mem, v1OOMCtl), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	waitNotice(t, w, OOMKill)
}
