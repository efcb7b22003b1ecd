package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// pidEnv marks guardrun's own binary started by WithPidEnv: "NAME FD",
// the variable to set to the shim's pid and the descriptor to report an
// exec that failed on.
const pidEnv = "GUARDRUN_PID_ENV"

// WithPidEnv makes cmd start as the shim of join.go (guardrun's own
// binary), which sets the variable name to its own pid and then execs
// cmd's program: the pid the program runs with, which no parent can put in
// a child's environment, as os/exec sets the environment before fork.
// systemd's LISTEN_PID is such a variable (sd_listen_fds(3)). The shim is
// started by whatever Start the group has (cloned into it, or from a lent
// thread, or joined), so it runs in the group from its first instruction,
// as the command would; on the join start the one shim does both.
//
// The rest of cmd (stdio, Dir, ExtraFiles, SysProcAttr) applies to the
// shim as os/exec always applies it, and carries over the exec. Call
// started with the error of the start, always: it waits until the shim has
// exec'd the program (EOF on a close-on-exec pipe) and reports an exec
// that failed as os/exec reports its own, so "not found" and "not
// executable" keep their exit codes. The cost is one more exec, of
// guardrun's binary, per start: see supervise's listenShim.
func WithPidEnv(cmd *exec.Cmd, name string) (started func(error) error, err error) {
	if cmd.Err != nil || cmd.Path == "" || len(cmd.Args) == 0 || cmd.Process != nil {
		// os/exec says what is wrong with cmd, as it always does.
		return func(err error) error { return err }, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe for the start that sets %s: %w", name, err)
	}
	ours, theirs := os.NewFile(uintptr(p[0]), "pid-env"), os.NewFile(uintptr(p[1]), "pid-env")
	path, args, env, extra := cmd.Path, cmd.Args, cmd.Env, cmd.ExtraFiles
	cmd.Path = shimPath
	cmd.Args = append([]string{args[0], path}, args...)
	cmd.Env = append(slices.Clip(startEnv(cmd)), fmt.Sprintf("%s=%s %d", pidEnv, name, 3+len(extra)))
	cmd.ExtraFiles = append(slices.Clip(extra), theirs)
	return func(err error) error {
		theirs.Close()
		defer ours.Close()
		cmd.Path, cmd.Args, cmd.Env, cmd.ExtraFiles = path, args, env, extra
		if err != nil {
			return shimStartError(err, path, "which sets "+name)
		}
		done, err := execResult(ours, cmd, path)
		if done {
			return err
		}
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("hear from the child: %v; %s was not started", err, path)
	}, nil
}

// shimmed reports a cmd that WithPidEnv made the shim already.
func shimmed(cmd *exec.Cmd) bool {
	return cmd.Path == shimPath && len(cmd.Args) >= 2 &&
		slices.ContainsFunc(cmd.Env, func(kv string) bool { return strings.HasPrefix(kv, pidEnv+"=") })
}

// parsePidEnv reads pidEnv's "NAME FD".
func parsePidEnv(v string) (name string, fd int, ok bool) {
	name, fds, _ := strings.Cut(v, " ")
	fd, err := strconv.Atoi(fds)
	return name, fd, err == nil && fd >= 3 && name != "" && !strings.Contains(name, "=")
}
