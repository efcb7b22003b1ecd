package supervise

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// beforeStopOutput bounds what a --before-stop hook's output may add to
// the log: a hook that dumps a heap to stdout must not flood the journal.
const beforeStopOutput = 64 << 10

// beforeStopInput is what a --before-stop hook reads on its stdin: the
// memory restart that is about to happen, as JSON.
type beforeStopInput struct {
	Run        string    `json:"run"`
	Pid        int       `json:"pid"`
	Cgroup     string    `json:"cgroup,omitempty"`
	Reason     string    `json:"reason"`
	Detail     string    `json:"detail"`
	Usage      uint64    `json:"usage"`
	WorkingSet uint64    `json:"working_set"`
	Cache      uint64    `json:"cache"`
	Ceiling    uint64    `json:"ceiling,omitempty"`
	Threshold  uint64    `json:"threshold,omitempty"`
	Time       time.Time `json:"time"`
}

// beforeStop runs the --before-stop hook once for a memory restart:
// `sh -c CMD` with the restart as JSON on stdin and GUARDRUN_PID,
// GUARDRUN_NAME, GUARDRUN_CGROUP and GUARDRUN_REASON in its environment,
// in a process group of its own so that at the timeout the hook and all
// it started are killed. Its output goes to the log, a line each. It never
// fails the run: a hook that fails or hangs is said in the log.
func (c *child) beforeStop(e Event, cgroupPath string) {
	in, _ := json.Marshal(beforeStopInput{Run: c.cfg.Name, Pid: e.Pid, Cgroup: cgroupPath, Reason: e.Reason, Detail: e.Detail,
		Usage: e.Usage, WorkingSet: e.WorkingSet, Cache: e.Cache, Ceiling: e.Ceiling, Threshold: e.Threshold, Time: time.Now()})
	cmd := exec.Command("/bin/sh", "-c", c.cfg.BeforeStop)
	cmd.Env = append(os.Environ(), "GUARDRUN_PID="+strconv.Itoa(e.Pid), "GUARDRUN_NAME="+c.cfg.Name,
		"GUARDRUN_CGROUP="+cgroupPath, "GUARDRUN_REASON="+e.Reason)
	cmd.Stdin = bytes.NewReader(append(in, '\n'))
	out := &capped{max: beforeStopOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Output still held open by something the hook left behind is not
	// waited for past this.
	cmd.WaitDelay = time.Second
	log := c.cfg.Log.With("run", c.cfg.Name, "hook", "before-stop")
	start := time.Now()
	wait, err := StartHelper(cmd)
	if err != nil {
		log.Warn("before-stop: could not start", "err", err)
		return
	}
	pgid := cmd.Process.Pid
	var timedOut atomic.Bool
	t := time.AfterFunc(c.cfg.BeforeStopTimeout, func() {
		timedOut.Store(true)
		unix.Kill(-pgid, unix.SIGKILL)
	})
	st, werr := wait()
	t.Stop()
	sc := bufio.NewScanner(bytes.NewReader(out.buf.Bytes()))
	for sc.Scan() {
		log.Info("before-stop output", "line", sc.Text())
	}
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case timedOut.Load():
		log.Warn("before-stop: killed at its timeout; stopping the child now", "timeout", c.cfg.BeforeStopTimeout)
	case werr != nil:
		log.Warn("before-stop: wait", "err", werr)
	case st.Signaled():
		log.Warn("before-stop: killed by a signal", "signal", signalName(st.Signal()), "took", took)
	case st.ExitStatus() != 0:
		log.Warn("before-stop: failed", "code", st.ExitStatus(), "took", took)
	default:
		log.Info("before-stop: done", "took", took)
	}
}

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	buf     bytes.Buffer
	max     int
	dropped int
}

func (w *capped) Write(p []byte) (int, error) {
	room := w.max - w.buf.Len()
	if room >= len(p) {
		return w.buf.Write(p)
	}
	if room > 0 {
		w.buf.Write(p[:room])
	}
	w.dropped += len(p) - max(room, 0)
	return len(p), nil
}
