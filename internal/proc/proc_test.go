package proc_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

func TestMain(m *testing.M) {
	testchild.MaybeRun()
	os.Exit(m.Run())
}

func TestReadStatSelf(t *testing.T) {
	st, err := proc.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	comm := filepath.Base(os.Args[0])
	comm = comm[:min(len(comm), 15)] // TASK_COMM_LEN less its NUL
	// The state is the main thread's, which may sleep while another runs.
	sid, _ := unix.Getsid(0)
	if st.Pid != os.Getpid() || st.PPid != os.Getppid() || st.PGrp != syscall.Getpgrp() || st.Session != sid ||
		st.Comm != comm || (st.State != 'R' && st.State != 'S') || st.Threads < 2 || st.RSS == 0 || st.VSize < st.RSS {
		t.Fatalf("own stat %+v: want pid %d, ppid %d, pgrp %d, session %d, comm %q, running or sleeping, threads, memory",
			st, os.Getpid(), os.Getppid(), syscall.Getpgrp(), sid, comm)
	}
	boot, err := proc.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	// btime is whole seconds, and so a start may read up to 1 s early.
	started := boot.Add(time.Duration(st.StartTime) * time.Second / proc.ClockTicks)
	if started.After(time.Now().Add(time.Second)) || started.Before(time.Now().Add(-time.Hour)) {
		t.Fatalf("started at %v (boot %v + %d ticks): not within the last hour", started, boot, st.StartTime)
	}
}

func TestReadStatGone(t *testing.T) {
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	// true's pid is reaped and not reused this soon (pids go round).
	_, err := proc.ReadStat(c.Process.Pid)
	path := "/proc/" + strconv.Itoa(c.Process.Pid) + "/stat"
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("ReadStat of a reaped pid: %v, want ErrNotExist naming %s", err, path)
	}
	if _, err := proc.Tree(c.Process.Pid); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Tree of a reaped pid: %v, want ErrNotExist", err)
	}
}

func TestReadStatus(t *testing.T) {
	s, err := proc.ReadStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The kernel sums VmRSS from the three (task_mem, fs/proc/task_mmu.c).
	if s.VmRSS == 0 || s.RssAnon == 0 || s.RssAnon+s.RssFile+s.RssShmem != s.VmRSS {
		t.Fatalf("own status %+v: want VmRSS = RssAnon + RssFile + RssShmem > 0", s)
	}
}

// A signal sent to a process and not taken yet is pending (a stopped
// process takes none but SIGKILL and SIGCONT), and a process killed by a
// signal says which while it is a zombie.
func TestPendingAndKilledBy(t *testing.T) {
	if st, err := proc.ReadStat(os.Getpid()); err != nil || st.KilledBy(unix.SIGKILL) {
		t.Fatalf("own stat %+v, %v: want a live process", st, err)
	}
	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Wait()
	defer c.Process.Kill()
	if err := c.Process.Signal(unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var st proc.Stat
	for range 500 {
		if st, _ = proc.ReadStat(c.Process.Pid); st.State == 'T' {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.State != 'T' {
		t.Fatalf("sleep did not stop within 5s: %+v", st)
	}
	if s, err := proc.ReadStatus(c.Process.Pid); err != nil || s.Pending(unix.SIGUSR1) {
		t.Fatalf("status %+v, %v: SIGUSR1 pending before it was sent", s, err)
	}
	if err := c.Process.Signal(unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if s, err := proc.ReadStatus(c.Process.Pid); err != nil || !s.Pending(unix.SIGUSR1) || s.Pending(unix.SIGKILL) {
		t.Fatalf("status %+v, %v: want SIGUSR1 pending and SIGKILL not", s, err)
	}
	if err := c.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for range 500 {
		if st, _ = proc.ReadStat(c.Process.Pid); st.State == 'Z' {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.State != 'Z' || !st.KilledBy(unix.SIGKILL) || st.KilledBy(unix.SIGUSR1) {
		t.Fatalf("sleep killed by SIGKILL, not reaped: stat %+v", st)
	}
}

func TestReadMemInfoHost(t *testing.T) {
	m, err := proc.ReadMemInfo()
	if err != nil {
		t.Fatal(err)
	}
	if m.Total == 0 || m.Free > m.Total || m.Available > m.Total || m.Available == 0 || m.SwapFree > m.SwapTotal {
		t.Fatalf("meminfo %+v", m)
	}
}

func TestFDs(t *testing.T) {
	before, err := proc.FDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	if after, err := proc.FDs(os.Getpid()); err != nil || after != before+5 {
		t.Fatalf("FDs went from %d to %d (%v) over 5 opens", before, after, err)
	}
}

// TestTree starts a real child under a comm with spaces and parentheses,
// which forks two real grandchildren: Tree finds all three, from the child
// and from this process.
func TestTree(t *testing.T) {
	const comm = "gr (t) k)d 2"
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// comm is the basename of the path exec'd, not of the file it names.
	link := filepath.Join(t.TempDir(), comm)
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	pidfile := filepath.Join(t.TempDir(), "pids")
	argv := testchild.Command("tree", "2", pidfile)
	c := exec.Command(link, argv[1:]...)
	c.Env = testchild.Environ()
	c.Stderr = os.Stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var grand []int
	t.Cleanup(func() {
		for _, p := range append(grand, c.Process.Pid) {
			syscall.Kill(p, syscall.SIGKILL)
		}
		c.Wait()
	})
	for _, s := range strings.Fields(testchild.WaitFile(t, pidfile)) {
		p, _ := strconv.Atoi(s)
		grand = append(grand, p)
	}
	slices.Sort(grand)

	st, err := proc.ReadStat(c.Process.Pid)
	if err != nil || st.Comm != comm || st.PPid != os.Getpid() {
		t.Fatalf("child's stat %+v, %v: want comm %q, ppid %d", st, err, comm, os.Getpid())
	}
	for _, g := range grand {
		if st, err := proc.ReadStat(g); err != nil || st.PPid != c.Process.Pid {
			t.Fatalf("grandchild %d: %+v, %v: want ppid %d", g, st, err, c.Process.Pid)
		}
	}
	kids, err := proc.Children(c.Process.Pid)
	if slices.Sort(kids); err != nil || !slices.Equal(kids, grand) {
		t.Fatalf("Children(%d) = %v, %v; want %v", c.Process.Pid, kids, err, grand)
	}
	tree, err := proc.Tree(c.Process.Pid)
	if err != nil || len(tree) != 3 || tree[0] != c.Process.Pid {
		t.Fatalf("Tree(%d) = %v, %v; want it first, then %v", c.Process.Pid, tree, err, grand)
	}
	if slices.Sort(tree[1:]); !slices.Equal(tree[1:], grand) {
		t.Fatalf("Tree(%d) = %v; want %v after it", c.Process.Pid, tree, grand)
	}
	mine, err := proc.Tree(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(grand, c.Process.Pid) {
		if !slices.Contains(mine, p) {
			t.Fatalf("Tree(self) = %v lacks %d", mine, p)
		}
	}
}

// A child is listed under the thread that forked it: children forked from
// four locked threads are all found.
func TestChildrenOfEveryThread(t *testing.T) {
	const n = 4
	cmds := make(chan *exec.Cmd, n)
	for range n {
		go func() {
			runtime.LockOSThread() // not unlocked: the thread ends with the goroutine
			argv := testchild.Command("sleep", "1h")
			c := exec.Command(argv[0], argv[1:]...)
			c.Env = testchild.Environ()
			if err := c.Start(); err != nil {
				t.Error(err)
				c = nil
			}
			cmds <- c
		}()
	}
	var want []int
	for range n {
		if c := <-cmds; c != nil {
			want = append(want, c.Process.Pid)
			defer c.Wait()
			defer c.Process.Kill()
		}
	}
	kids, err := proc.Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range want {
		if !slices.Contains(kids, p) {
			t.Fatalf("Children(self) = %v lacks %d of %v", kids, p, want)
		}
	}
}

// A zombie is still in its parent's tree, with no children of its own.
func TestTreeZombie(t *testing.T) {
	c := exec.Command("true")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Wait()
	var st proc.Stat
	for i := 0; i < 500; i++ {
		if st, _ = proc.ReadStat(c.Process.Pid); st.State == 'Z' {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.State != 'Z' {
		t.Fatalf("true did not become a zombie within 5s: %+v", st)
	}
	if st.KilledBy(unix.SIGKILL) || st.ExitCode != 0 {
		t.Errorf("true exited 0, its stat says %+v", st)
	}
	if tree, err := proc.Tree(c.Process.Pid); err != nil || !slices.Equal(tree, []int{c.Process.Pid}) {
		t.Fatalf("Tree of a zombie = %v, %v", tree, err)
	}
}

func BenchmarkReadStat(b *testing.B) {
	b.ReportAllocs()
	pid := os.Getpid()
	for b.Loop() {
		if _, err := proc.ReadStat(pid); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTreeSelf(b *testing.B) {
	b.ReportAllocs()
	pid := os.Getpid()
	for b.Loop() {
		if _, err := proc.Tree(pid); err != nil {
			b.Fatal(err)
		}
	}
}
