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

	"github.com/guardrun/guardrun/internal/proc"
	"github.com/guardrun/guardrun/internal/testchild"
	"golang.org/x/sys/unix"
)

// enclosedEnv makes the test binary, started in a container-like sandbox
// by TestEnclosingReadOnly, the sandbox's side of it: its value is what
// to check ("run" or "oomgroup").
const enclosedEnv = "GUARDRUN_TEST_ENCLOSED"

// sandboxCeiling is the sandbox group's memory limit: room for this test
// binary (with the race detector) and a child, which a leak then fills.
const sandboxCeiling = 192 << 20

// TestEnclosingReadOnly builds the sandbox a container engine makes, by
// hand: a memory-limited group (v1 on the host, v2 in the VM) that the
// test binary starts in, with cgroup and mount namespaces of its own, the
// cgroupfs mounted read-only again from inside. There the sandbox's side
// (enclosedSide) checks what Open under --cgroup auto gives and runs
// children in it.
func TestEnclosingReadOnly(t *testing.T) {
	if mode := os.Getenv(enclosedEnv); mode != "" {
		enclosedSide(t, mode)
		return
	}
	modes := []string{"run"}
	if Discover().Version() == "v2" {
		modes = append(modes, "oomgroup") // memory.oom.group is v2's
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			g := open(t, Limits{Ceiling: sandboxCeiling})
			if mode == "oomgroup" {
				if err := writeFile(filepath.Join(g.Path(), v2OOMGroup), "1"); err != nil {
					t.Fatal(err)
				}
			}
			c := exec.Command(os.Args[0], "-test.run=^TestEnclosingReadOnly$", "-test.v", "-test.count=1")
			c.Env = append(os.Environ(), enclosedEnv+"="+mode)
			// Unshared after the start put it in g: g is the namespace's root.
			c.SysProcAttr = &syscall.SysProcAttr{Unshareflags: unix.CLONE_NEWCGROUP | unix.CLONE_NEWNS}
			var out strings.Builder
			c.Stdout, c.Stderr = &out, &out
			if err := g.Start(c); err != nil {
				t.Fatal(err)
			}
			err := c.Wait()
			t.Logf("the sandbox's side:\n%s", out.String())
			if err != nil || !strings.Contains(out.String(), "--- PASS: TestEnclosingReadOnly") {
				t.Fatalf("the sandbox's side failed: %v", err)
			}
		})
	}
}

// enclosedSide is TestEnclosingReadOnly inside the sandbox.
func enclosedSide(t *testing.T, mode string) {
	h := Discover()
	backend := h.Version()
	mount := remountReadOnly(t, h)
	h = Discover()

	g, err := Open(Options{Name: "grtest-enclosed", Backend: "auto"})
	if err != nil {
		t.Fatalf("Open auto: %v", err)
	}
	e, ok := Enclosing(g)
	if !ok {
		t.Fatalf("Open auto gave a %s group at %q (%s), not the enclosing one", g.Backend(), g.Path(), NoCgroupReason(g))
	}
	if g.Backend() != backend || g.Path() != mount || e.Dir != mount || !e.ReadOnly || e.Ceiling != sandboxCeiling {
		t.Fatalf("enclosing group %+v (backend %s, path %s); want %s at %s, read-only, ceiling %d", e, g.Backend(), g.Path(), backend, mount, sandboxCeiling)
	}
	if want := "observing the container's own group (read-only cgroupfs): ceiling = the container's " + e.limitFile() + " (192 MiB)"; !strings.HasPrefix(e.String(), want) {
		t.Errorf("String() = %q, want it to start %q", e, want)
	}
	if e.OOMGroup != (mode == "oomgroup") || e.OOMGroup != strings.Contains(e.String(), "memory.oom.group is 1") {
		t.Errorf("OOMGroup %v in %q; the sandbox's memory.oom.group is set: %v", e.OOMGroup, e, mode == "oomgroup")
	}
	if e.OOMPolled != (backend == "v1") {
		t.Errorf("OOMPolled = %v on %s", e.OOMPolled, backend)
	}
	// A forced backend stays an error, and names the way out.
	var ee *EnclosedError
	if _, err := Open(Options{Name: "grtest-forced", Backend: backend}); !errors.As(err, &ee) || !strings.Contains(ee.Hint(), "--cgroup auto") {
		t.Errorf("forced --cgroup %s: %v; want an EnclosedError whose hint points at auto", backend, err)
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if mode == "oomgroup" {
		return // an OOM kill here would take this test with it
	}

	t.Run("oom_kill", func(t *testing.T) { enclosedOOMKill(t) })
	t.Run("kill", func(t *testing.T) { enclosedKill(t) })
	t.Run("sampled", func(t *testing.T) { enclosedSampled(t) })
	if _, err := os.Stat(filepath.Join(mount, "guardrun")); err == nil && h.V2 == mount {
		t.Errorf("%s/guardrun exists: something wrote the read-only cgroupfs", mount)
	}
}

// remountReadOnly mounts the memory hierarchy again, read-only, as a
// container engine mounts it inside the container's namespaces (this
// process's own: nothing outside it changes), and returns the mount point.
func remountReadOnly(t *testing.T, h Hierarchy) string {
	t.Helper()
	fstype, mount, opts := "cgroup2", h.V2, ""
	if h.Version() == "v1" {
		fstype, mount, opts = "cgroup", h.V1Memory, "memory"
	}
	// The same superblock cannot be mounted over itself (EBUSY): detach
	// the inherited view first.
	if err := unix.Unmount(mount, unix.MNT_DETACH); err != nil {
		t.Fatalf("unmount %s: %v", mount, err)
	}
	if err := unix.Mount("cgroup", mount, fstype, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		t.Fatalf("mount %s read-only at %s: %v", fstype, mount, err)
	}
	return mount
}

// enclosedOOMKill: the kernel's OOM kill of a leaking child at the
// container's ceiling is told by the watch (v2: memory.events; v1: the
// poll of memory.oom_control), counted once, and guardrun lives on.
func enclosedOOMKill(t *testing.T) {
	g, err := Open(Options{Name: "grtest-enclosed", Backend: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	w, err := g.Watch(WatchSpec{OOM: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := child("leak", "4")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	victim(t, c)
	waitNotice(t, w, OOMKill)
	err = c.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("leaking child ended with %v, want SIGKILL", err)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.OOMKills != 1 || s.Ceiling != sandboxCeiling || s.Peak < sandboxCeiling-8<<20 {
		t.Fatalf("stats %+v: want one OOM kill, the container's ceiling, the peak at it", s)
	}
	if len(s.MemoryStat) == 0 || s.WorkingSet == 0 || s.WorkingSet > s.Current {
		t.Fatalf("stats %+v: want memory.stat and a working set", s)
	}
	// A new child starts from zero: the group outlives each one.
	g2, err := Open(Options{Name: "grtest-enclosed", Backend: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Remove()
	if s, err := g2.Stats(); err != nil || s.OOMKills != 0 || s.Peak >= sandboxCeiling-8<<20 {
		t.Fatalf("a new group after the kill: %+v, %v; want no OOM kill and a peak of its own", s, err)
	}
}

// victim makes the leaking child the kernel's choice at the sandbox's
// ceiling: this test binary shares the group, and under the race
// detector its own pages can outweigh the child's when the kill comes.
func victim(t *testing.T, c *exec.Cmd) {
	t.Helper()
	if err := os.WriteFile("/proc/"+strconv.Itoa(c.Process.Pid)+"/oom_score_adj", []byte("1000"), 0); err != nil {
		t.Fatal(err)
	}
}

// enclosedKill: Kill takes the child's tree and nothing else of the group,
// which holds this process too.
func enclosedKill(t *testing.T) {
	g, err := Open(Options{Name: "grtest-enclosed", Backend: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(t.TempDir(), "pids")
	c := child("tree", "2", pidfile)
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(testchild.WaitFile(t, pidfile)) {
		p, _ := strconv.Atoi(f)
		pids = append(pids, p)
	}
	procs, _ := g.Procs()
	if len(procs) != 3 {
		t.Errorf("Procs = %v, want the child and its 2 grandchildren", procs)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		for i := 0; testchild.Alive(p); i++ {
			if i == 500 {
				t.Fatalf("grandchild %d survived Kill", p)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if _, err := os.Stat(g.Path()); err != nil {
		t.Fatalf("the enclosing group went: %v", err)
	}
}

// enclosedSampled: a --max below the container's ceiling is held by the
// RSS sampler, which kills there and says so through the watch.
func enclosedSampled(t *testing.T) {
	g, err := Open(Options{Name: "grtest-enclosed", Backend: "auto", Limits: Limits{Ceiling: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	e, _ := Enclosing(g)
	if !e.Sampled() || e.ChildCeiling() != 64<<20 || len(e.Notes()) == 0 || !strings.Contains(e.Notes()[0], "--max 64 MiB is below the container's") {
		t.Fatalf("enclosure %+v, notes %q: want --max sampled below the container's", e, e.Notes())
	}
	w, err := g.Watch(WatchSpec{OOM: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := child("leak", "2")
	if err := g.Start(c); err != nil {
		t.Fatal(err)
	}
	victim(t, c)
	waitNotice(t, w, OOMKill)
	c.Wait()
	s, _ := g.Stats()
	if s.OOMKills != 1 || s.Ceiling != 64<<20 {
		t.Fatalf("stats %+v: want the sampler's one kill at the 64 MiB --max", s)
	}
}

func TestEnclosureWords(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		e       Enclosure
		sampled bool
		ceiling uint64
		line    string
		notes   []string
	}{
		{Enclosure{Backend: "v2", ReadOnly: true, Ceiling: 128 * mib}, false, 128 * mib,
			"observing the container's own group (read-only cgroupfs): ceiling = the container's memory.max (128 MiB)", nil},
		{Enclosure{Backend: "v2", ReadOnly: true, Ceiling: 128 * mib, Max: 64 * mib, OOMGroup: true}, true, 64 * mib,
			"observing the container's own group (read-only cgroupfs): ceiling = the container's memory.max (128 MiB); memory.oom.group is 1 there: one OOM kill takes the whole container, guardrun with it, and no verdict is told",
			[]string{"--max 64 MiB is below the container's memory.max (128 MiB): guardrun enforces it by sampling the child's RSS every 100ms, and a fast leak can overshoot it; the kernel still kills at the container's"}},
		{Enclosure{Backend: "v1", ReadOnly: true, Ceiling: 128 * mib, Max: 256 * mib, OOMPolled: true}, false, 128 * mib,
			"observing the container's own group (read-only cgroupfs): ceiling = the container's memory.limit_in_bytes (128 MiB)",
			[]string{"--max 256 MiB is above the container's memory.limit_in_bytes (128 MiB): the kernel kills at the container's",
				"cgroup v1 with a read-only cgroupfs: cgroup.event_control cannot be written, so OOM kills are read from memory.oom_control every 100ms and at the child's exit, not signalled"}},
		{Enclosure{Backend: "v2", ReadOnly: true, Ceiling: 128 * mib, Shielded: true}, false, 128 * mib,
			"observing the container's own group (read-only cgroupfs): ceiling = the container's memory.max (128 MiB); guardrun's own oom_score_adj is -1000, so that the kernel's OOM killer never takes it after the child, and the child and hooks get back the score guardrun was given", nil},
		{Enclosure{Backend: "v2", ReadOnly: true, Ceiling: 128 * mib, ShieldErr: "write /proc/1/oom_score_adj: permission denied"}, false, 128 * mib,
			"observing the container's own group (read-only cgroupfs): ceiling = the container's memory.max (128 MiB)",
			[]string{"guardrun shares the container's memory group with its child, and after an OOM kill of the child the kernel may take guardrun too, ending the container (it does, now and then, when the child's memory is not given back at once); guardrun could not set its own oom_score_adj to -1000 (write /proc/1/oom_score_adj: permission denied): grant it CAP_SYS_RESOURCE (docker run --cap-add SYS_RESOURCE; Kubernetes: securityContext.capabilities.add [SYS_RESOURCE])"}},
		{Enclosure{Backend: "v2", ReadOnly: true, Max: 64 * mib}, true, 64 * mib,
			"observing the container's own group (read-only cgroupfs): ceiling = the container's memory.max (none: the container has no memory limit)",
			[]string{"--max 64 MiB: the container has no memory limit, so guardrun enforces it by sampling the child's RSS every 100ms, and a fast leak can overshoot it"}},
	} {
		if got := c.e.String(); got != c.line {
			t.Errorf("%+v: String() = %q, want %q", c.e, got, c.line)
		}
		if c.e.Sampled() != c.sampled || c.e.ChildCeiling() != c.ceiling {
			t.Errorf("%+v: Sampled %v, ChildCeiling %d; want %v, %d", c.e, c.e.Sampled(), c.e.ChildCeiling(), c.sampled, c.ceiling)
		}
		if got := c.e.Notes(); strings.Join(got, "\n") != strings.Join(c.notes, "\n") {
			t.Errorf("%+v: Notes() = %q, want %q", c.e, got, c.notes)
		}
	}
}

func TestCannotWrite(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&os.PathError{Op: "mkdir", Path: "/sys/fs/cgroup/guardrun", Err: unix.EROFS}, true},
		{fmt.Errorf("write %q to %s: %w", "+memory", "x", &os.PathError{Op: "open", Path: "x", Err: unix.EACCES}), true},
		{unix.EPERM, true},
		{unix.EBUSY, false},
		{errors.New("cgroup /user.slice is not delegated to uid 1000"), false},
	} {
		if got := cannotWrite(c.err); got != c.want {
			t.Errorf("cannotWrite(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// RestoreOOMScore gives a started process the score guardrun had before
// shield, and a process that is already gone is no error. The score is
// raised here, which takes no capability; shield itself needs
// CAP_SYS_RESOURCE and is run by TestContainerReadOnlyCgroupfs in the VM.
func TestRestoreOOMScore(t *testing.T) {
	shielded.Lock()
	on, orig := shielded.on, shielded.orig
	shielded.on, shielded.orig = true, 500
	shielded.Unlock()
	defer func() {
		shielded.Lock()
		shielded.on, shielded.orig = on, orig
		shielded.Unlock()
	}()

	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Wait()
	defer c.Process.Kill()
	if err := RestoreOOMScore(c.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if got, err := proc.OOMScoreAdj(c.Process.Pid); err != nil || got != 500 {
		t.Fatalf("oom_score_adj = %d, %v; want 500", got, err)
	}

	gone := exec.Command("sh", "-c", "exit 0") // the VM has no true
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if err := RestoreOOMScore(gone.Process.Pid); err != nil {
		t.Fatalf("a reaped process: %v, want nil", err)
	}
}
