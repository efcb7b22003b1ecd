package supervise

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"golang.org/x/sys/unix"
)

// sentinelEnv marks a process started as a run's sentinel.
const sentinelEnv = "GUARDRUN_SENTINEL"

// A sentinel outlives guardrun by a moment to clean up after it. The
// child dies with guardrun by its parent-death signal, but what the child
// forked does not: a daemonised grandchild would live on in the group
// until the next start of the name reclaims it. So guardrun starts a
// small process of its own binary, outside the group, and tells it over a
// pipe which group the current child runs in. When guardrun ends in any
// way, even by SIGKILL, the kernel closes the pipe; the sentinel reads its
// end, and if a group is still named it kills what is in it and removes
// it. A normal end clears the name first, so the sentinel just exits.
type sentinel struct {
	w    *os.File
	wait func() (unix.WaitStatus, error)
}

// sentinelAfter is how long a child runs before guardrun starts its
// sentinel. Starting one costs a fork, an exec and a Go runtime's start
// on a second CPU: about 3-5 ms, which would be half the cost of wrapping
// a short command (a compiler step in a CI build, `true`). A child that
// has not forked and daemonised within 100 ms of its start, with guardrun
// SIGKILLed in that moment too, is left to the next start of the name.
const sentinelAfter = 100 * time.Millisecond

// ensureSentinel starts the run's sentinel once, and names the group.
func (s *supervisor) ensureSentinel(g cgroup.Group) {
	if s.senTried {
		s.sen.watch(g)
		return
	}
	s.senTried = true
	sen, err := startSentinel(g)
	if err != nil {
		s.cfg.Log.Warn("no sentinel: if guardrun is killed, what the child forked lives on until the next start of the name", "run", s.cfg.Name, "err", err)
	}
	s.sen = sen
}

// startSentinel starts the sentinel with g already named; a sentinel that
// cannot start leaves guardrun as it was before sentinels: the next start
// reclaims the group.
func startSentinel(g cgroup.Group) (*sentinel, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	// The group goes into the pipe before the sentinel starts: a SIGKILL
	// right after the fork must not leave a sentinel that reads EOF with
	// nothing named (seen under load: the child's forks lived on).
	sen := &sentinel{w: w}
	sen.watch(g)
	cmd := exec.Command(exe)
	cmd.Args = []string{"guardrun-sentinel"}
	// GOMAXPROCS=1: all it does is block in a read and, at most once, kill
	// and remove a group. A P per CPU (Go's default) only adds threads and
	// per-P caches to its resident memory, about 15 KiB of RssAnon a CPU
	// (measured 1156 KiB with GOMAXPROCS 1, 1268 with 2, 2096 with 64).
	cmd.Env = []string{sentinelEnv + "=1", "GOMAXPROCS=1"}
	cmd.ExtraFiles = []*os.File{r}
	cmd.Stderr = os.Stderr
	// Its own process group: a Ctrl-C or a signal to guardrun's group is
	// not for it; it ends when the pipe does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A helper: an init's reaping hands its status to wait.
	if sen.wait, err = StartHelper(cmd); err != nil {
		w.Close()
		return nil, err
	}
	return sen, nil
}

// watch names the group the sentinel reclaims if guardrun dies.
func (s *sentinel) watch(g cgroup.Group) {
	if s == nil {
		return
	}
	if dirs := cgroup.Dirs(g); len(dirs) > 0 {
		fmt.Fprintf(s.w, "g %s\n", strings.Join(dirs, "\t"))
	}
}

// clear says the group is gone, removed by guardrun itself.
func (s *sentinel) clear() {
	if s != nil {
		fmt.Fprintln(s.w, "x")
	}
}

// close ends the sentinel: nothing is named, so it exits at once.
func (s *sentinel) close() {
	if s == nil {
		return
	}
	s.clear()
	s.w.Close()
	// It exits as soon as it has read the pipe, but a Go process takes
	// milliseconds to start and end: guardrun does not wait for that. It
	// is reaped here when it is done, or, when guardrun exits first, by
	// whoever inherits it.
	go s.wait()
}

// MaybeSentinel runs the sentinel and exits when this process is one.
// guardrun's main (and every test binary that runs supervise.Run with a
// sentinel) calls it first.
func MaybeSentinel() {
	if os.Getenv(sentinelEnv) != "1" {
		return
	}
	signal.Ignore(unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU, unix.SIGPIPE)
	os.Exit(runSentinel(os.NewFile(3, "sentinel")))
}

func runSentinel(f *os.File) int {
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		switch line := sc.Text(); {
		case line == "x":
			dirs = nil
		case strings.HasPrefix(line, "g "):
			dirs = strings.Split(line[2:], "\t")
		}
	}
	if len(dirs) == 0 {
		return 0
	}
	// guardrun is gone and left its group behind.
	if err := cgroup.Reclaim(dirs[0], dirs[1:]...); err != nil {
		fmt.Fprintf(os.Stderr, "guardrun: sentinel: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "guardrun: sentinel: guardrun died; killed what was left in %s and removed it\n", dirs[0])
	return 0
}
