package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/proc"
	"github.com/guardrun/guardrun/internal/testchild"
	"golang.org/x/sys/unix"
)

// pidsOf reads the pids a test child wrote to file, one a line.
func pidsOf(t testing.TB, file string) []int {
	t.Helper()
	var pids []int
	for _, s := range strings.Fields(testchild.WaitFile(t, file)) {
		p, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		pids = append(pids, p)
	}
	return pids
}

func killPids(pids ...int) {
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// The sampler's tree is the child and its grandchildren, found from the
// child alone, and Kill kills all of it.
func TestNoneTreeFindsGrandchildren(t *testing.T) {
	g, err := Open(Options{Name: "grtest-none-tree", Backend: "none"})
	if err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(t.TempDir(), "pids")
	c := child("tree", "3", pidfile)
	if err := g.Start(c); err != nil {
		g.Remove()
		t.Fatal(err)
	}
	defer func() {
		g.Remove() // kills the tree
		c.Wait()
	}()
	grand := pidsOf(t, pidfile)
	defer killPids(grand...)
	g.(*noneGroup).sample()
	got, _ := g.Procs()
	want := append([]int{c.Process.Pid}, grand...)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Procs = %v, want the child and its grandchildren %v", got, want)
	}
	var rss uint64
	for _, p := range want {
		st, _ := proc.ReadStat(p)
		rss += st.RSS
	}
	// Sleeping test children: their RSS moves little between two reads.
	if s, _ := g.Stats(); s.Current == 0 || s.Current > 2*rss || 2*s.Current < rss {
		t.Fatalf("Current %d, the tree's RSS %d", s.Current, rss)
	}
	g.Kill()
	for _, p := range grand {
		for i := 0; testchild.Alive(p); i++ {
			if i == 500 {
				t.Fatalf("grandchild %d outlived Kill by 5s", p)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// A known pid that now names another process (a later start time) is not
// the tree's: neither it nor its children are read as ours.
func TestScanTreeDropsReusedPid(t *testing.T) {
	c := child("sleep", "1h")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Wait()
	defer c.Process.Kill()
	st, err := proc.ReadStat(c.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if got := scanTree(map[int]uint64{c.Process.Pid: st.StartTime - 1}, c.Process.Pid, false, 0); len(got) != 0 {
		t.Fatalf("scanTree took a reused pid: %v", got)
	}
	if got := scanTree(map[int]uint64{c.Process.Pid: st.StartTime}, c.Process.Pid, false, 0); len(got) != 1 {
		t.Fatalf("scanTree of the live child: %v", got)
	}
}

// A zombie in the tree (a child its parent has not reaped) is dead and
// holds no memory: the scan leaves it out. Here sh starts true in the
// background and execs sleep, which never reaps it.
func TestScanTreeLeavesOutZombies(t *testing.T) {
	c := exec.Command("sh", "-c", "true & exec sleep 3600")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Wait()
	defer c.Process.Kill()
	pid := c.Process.Pid
	for i := 0; ; i++ {
		kids, _ := proc.Children(pid)
		if len(kids) == 1 {
			if st, err := proc.ReadStat(kids[0]); err == nil && st.State == 'Z' {
				break
			}
		}
		if i == 500 {
			t.Fatalf("no zombie under %d within 5s (children %v)", pid, kids)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := proc.ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if got := scanTree(map[int]uint64{pid: st.StartTime}, pid, false, 0); len(got) != 1 {
		t.Fatalf("scanTree = %v, want the sleeper %d alone", keys(got), pid)
	}
}

func TestAdopted(t *testing.T) {
	const self, child, session = 100, 200, 50
	for _, tc := range []struct {
		name string
		p    proc.Stat
		want bool
	}{
		{"an orphan in the child's group", proc.Stat{Pid: 300, PPid: self, PGrp: child, Session: session}, true},
		{"a daemon in a session of its own", proc.Stat{Pid: 300, PPid: self, PGrp: 299, Session: 299}, true},
		{"the child itself", proc.Stat{Pid: child, PPid: self, PGrp: child, Session: session}, false},
		{"a hook, leading its own group", proc.Stat{Pid: 400, PPid: self, PGrp: 400, Session: session}, false},
		{"a hook's orphan", proc.Stat{Pid: 401, PPid: self, PGrp: 400, Session: session}, false},
		{"a process of another parent", proc.Stat{Pid: 300, PPid: 1, PGrp: child, Session: session}, false},
	} {
		if got := adopted(tc.p, self, child, session); got != tc.want {
			t.Errorf("%s: adopted(%+v) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

// With guardrun a child subreaper (--init), the tree's orphans that were
// never sampled inside it are still found among guardrun's own children:
// one left in the child's group, and a daemon that double-forked into a
// session of its own after its parent, the child, exited. A process
// guardrun starts for itself (a hook: Setpgid) is not.
//
// It runs in a child test process, which alone becomes a subreaper, so
// the orphans of the tests beside it do not come to this one.
func TestNoneAdoptsOrphansAsSubreaper(t *testing.T) {
	if os.Getenv("GUARDRUN_TEST_SUBREAPER") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestNoneAdoptsOrphansAsSubreaper$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "GUARDRUN_TEST_SUBREAPER=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		t.Logf("%s", out)
		return
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	session, _ := unix.Getsid(0)
	dir := t.TempDir()
	// start starts a test child leading its own group, as supervise starts
	// the child and its hooks.
	start := func(mode string, args ...string) (*exec.Cmd, uint64) {
		c := child(mode, args...)
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		st, err := proc.ReadStat(c.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return c, st.StartTime
	}
	reparented := func(pid int) {
		for i := 0; ; i++ {
			if st, err := proc.ReadStat(pid); err == nil && st.PPid == self {
				return
			}
			if i == 500 {
				t.Fatalf("%d was not reparented to this subreaper within 5s", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// The child leaves a 1 s sleeper behind in its group, then sleeps.
	c, cstart := start("orphan", filepath.Join(dir, "orphan"))
	defer c.Wait()
	defer c.Process.Kill()
	orphan := pidsOf(t, filepath.Join(dir, "orphan"))[0]
	defer killPids(orphan)
	reparented(orphan)
	hook, _ := start("sleep", "1h")
	defer hook.Wait()
	defer hook.Process.Kill()
	known := map[int]uint64{c.Process.Pid: cstart}
	got := scanTree(known, c.Process.Pid, true, session)
	if _, ok := got[orphan]; !ok || len(got) != 2 {
		t.Fatalf("scanTree = %v: want the child %d and its orphan %d, not the hook %d", keys(got), c.Process.Pid, orphan, hook.Process.Pid)
	}
	if got := scanTree(known, c.Process.Pid, false, session); len(got) != 1 {
		t.Fatalf("scanTree without adopt = %v, want the child alone", keys(got))
	}

	// The child double-forks a daemon into its own session and exits.
	d, dstart := start("daemon", filepath.Join(dir, "daemon"))
	daemon := pidsOf(t, filepath.Join(dir, "daemon"))[0]
	defer killPids(daemon)
	d.Wait()
	reparented(daemon)
	got = scanTree(map[int]uint64{d.Process.Pid: dstart}, d.Process.Pid, true, session)
	if !slices.Equal(keys(got), []int{daemon}) {
		t.Fatalf("scanTree = %v: want the daemon %d alone, not the hook %d nor the first child's tree", keys(got), daemon, hook.Process.Pid)
	}
}

func keys(m map[int]proc.Stat) []int {
	var pids []int
	for p := range m {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	return pids
}
