package supervise

import (
	"errors"
	"fmt"
	"os/exec"
	"sync"

	"github.com/guardrun/guardrun/cgroup"
	"golang.org/x/sys/unix"
)

// Helpers are the processes guardrun starts besides the child: a
// --before-stop hook, a --notify-exec command. As an init, guardrun reaps
// every child it has with wait4(-1), and that would take a helper's exit
// status from the goroutine waiting for it: the waiter sees ECHILD and a
// retry runs the hook a second time. So a helper is started through
// StartHelper, which records its pid, and the reaper hands the status of a
// recorded pid to its waiter instead of dropping it.
//
// The table is process-wide because wait4(-1) is: any goroutine's child
// is every goroutine's to reap.
var helpers = struct {
	sync.Mutex
	done map[int]chan unix.WaitStatus
}{done: map[int]chan unix.WaitStatus{}}

// StartHelper starts cmd and returns how to wait for it. The pid is
// recorded before the reaper can see it exit: the table's lock is held
// across the fork. wait returns the helper's status once, whoever reaped
// it, and then lets exec.Cmd finish copying its output.
func StartHelper(cmd *exec.Cmd) (wait func() (unix.WaitStatus, error), err error) {
	helpers.Lock()
	err = cmd.Start()
	var ch chan unix.WaitStatus
	var restoreErr error
	if err == nil {
		ch = make(chan unix.WaitStatus, 1)
		helpers.done[cmd.Process.Pid] = ch
		// It inherited guardrun's oom_score_adj, which may be the -1000
		// guardrun gave itself in the container's group. Under the lock
		// the reaper cannot take it meanwhile: it is alive or a zombie.
		restoreErr = cgroup.RestoreOOMScore(cmd.Process.Pid)
	}
	helpers.Unlock()
	if err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	wait = func() (unix.WaitStatus, error) {
		// Wait for the exit without reaping (WNOWAIT), then reap under
		// the lock: while it is a zombie its pid cannot be handed to
		// another process, so the table never names the wrong one.
		var info unix.Siginfo
		var err error
		for {
			err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		var st unix.WaitStatus
		helpers.Lock()
		if err == nil {
			_, err = unix.Wait4(pid, &st, unix.WNOHANG, nil)
		}
		delete(helpers.done, pid)
		helpers.Unlock()
		if errors.Is(err, unix.ECHILD) {
			// The reaper was first: it left the status here, under the
			// lock we took after it.
			select {
			case st = <-ch:
				err = nil
			default:
			}
		}
		// The process is reaped; Wait only collects the output goroutines
		// (and reports ECHILD, which is expected here).
		cmd.Wait()
		return st, err
	}
	if restoreErr != nil {
		cmd.Process.Kill()
		wait()
		return nil, restoreErr
	}
	return wait, nil
}

// StatusError says how a helper ended, nil when it exited 0.
func StatusError(st unix.WaitStatus) error {
	switch {
	case st.Exited() && st.ExitStatus() == 0:
		return nil
	case st.Signaled():
		return fmt.Errorf("killed by %s", unix.SignalName(st.Signal()))
	}
	return fmt.Errorf("exit status %d", st.ExitStatus())
}

// reap collects exited children without blocking and reports the child's
// status once it is among them. As an init it reaps every orphan that was
// reparented to it, and hands a helper's status to its waiter; otherwise
// only its own child.
func reap(child int, all bool) (unix.WaitStatus, bool) {
	var childStatus unix.WaitStatus
	found := false
	who := child
	if all {
		who = -1
		helpers.Lock()
		defer helpers.Unlock()
	}
	for {
		var st unix.WaitStatus
		pid, err := unix.Wait4(who, &st, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return childStatus, found
		}
		if ch, ok := helpers.done[pid]; all && ok {
			ch <- st
			delete(helpers.done, pid)
			continue
		}
		if pid == child {
			childStatus, found = st, true
			if !all {
				return childStatus, found
			}
		}
	}
}
