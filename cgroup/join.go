package cgroup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The join start: where the kernel cannot clone a child into a cgroup
// (no CLONE_INTO_CGROUP), v2Group.Start starts the child as guardrun's own
// binary, moves it into the group, and only then lets it exec the command.

// joinEnv marks guardrun's own binary started by the join start: its value
// is the descriptor the shim waits on (see shim).
const joinEnv = "GUARDRUN_CGROUP_JOIN"

// startJoined starts cmd in the groups whose cgroup.procs files are procs
// without cloning into them, and still without one instruction of cmd
// outside them. The child starts as guardrun's own binary
// (/proc/self/exe, as the sentinel does), which runs no more than
// shim: it waits on a socket. guardrun moves it, the whole process,
// into each group through cgroup.procs, and only then tells it to go; it
// execs the command from inside. If the move fails the shim is killed and
// the command never runs.
//
// The shim is guardrun's code; what it touched before the move stays
// charged to guardrun's own cgroup, and goes with its old address space at
// exec ("Memory Ownership", cgroup-v2.rst). Everything of the command is
// charged to the group: the pages its execve maps and every page after.
//
// The rest of cmd (stdio, Dir, SysProcAttr: process group, terminal,
// parent-death signal, --user's credentials) applies to the shim as os/exec
// always applies it, and carries over the exec to the command. The
// command's environment is cmd's, without joinEnv; its descriptors are
// cmd's, without the socket (close-on-exec). An exec that fails is
// reported back over the socket as os/exec reports its own, so "not
// found" and "not executable" keep their exit codes.
//
// The parent's move takes the write side of cgroup_threadgroup_rwsem, the
// lock CLONE_INTO_CGROUP exists to avoid (commit ef2c41cf38a7): a cost
// per start on old kernels, not a window.
func startJoined(cmd *exec.Cmd, procs ...string) error {
	if cmd.Err != nil || cmd.Path == "" || len(cmd.Args) == 0 || cmd.Process != nil {
		// os/exec says what is wrong with cmd, as it always does.
		return cmd.Start()
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair for the start without CLONE_INTO_CGROUP: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "join"), os.NewFile(uintptr(fds[1]), "join")
	defer ours.Close()

	was, args, env, extra := cmd.Path, cmd.Args, cmd.Env, cmd.ExtraFiles
	path := was // the command's program, for what is said of it
	if shimmed(cmd) {
		// Already the shim (WithPidEnv): the one process waits for the
		// move too, with no second exec of guardrun's binary.
		path = args[1]
	} else {
		cmd.Path = shimPath
		cmd.Args = append([]string{args[0], path}, args...)
	}
	cmd.Env = append(slices.Clip(startEnv(cmd)), fmt.Sprintf("%s=%d", joinEnv, 3+len(extra)))
	cmd.ExtraFiles = append(slices.Clip(extra), theirs)
	err = cmd.Start()
	theirs.Close()
	cmd.Path, cmd.Args, cmd.Env, cmd.ExtraFiles = was, args, env, extra
	if err != nil {
		return shimStartError(err, path, "as this kernel cannot clone into a cgroup")
	}
	abandon := func(why string, err error) error {
		cmd.Process.Kill()
		cmd.Wait()
		// %v: an errno here (ENOENT for a group that went, EACCES) is
		// guardrun's failure, not the command's "not found".
		return fmt.Errorf("%s: %v; %s was not started", why, err, path)
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	for _, p := range procs {
		if err := writeFile(p, pid); err != nil {
			return abandon("move the child into its group before it runs", err)
		}
	}
	if _, err := ours.Write([]byte{1}); err != nil {
		return abandon("tell the child to run", err)
	}
	done, err := execResult(ours, cmd, path)
	if !done {
		return abandon("hear from the child", err)
	}
	return err
}

// execResult hears from a shim how its exec of path went: its end of the
// pipe closes at the exec (close-on-exec), so EOF is success; before that
// it writes the errno of an exec that failed, reported as os/exec reports
// its own, so "not found" and "not executable" keep their exit codes.
// done is false when the shim said neither: err is why, and the child is
// the caller's to abandon.
func execResult(ours io.Reader, cmd *exec.Cmd, path string) (done bool, err error) {
	var b [4]byte
	n, err := io.ReadFull(ours, b[:])
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return true, nil
	case n == len(b):
		cmd.Wait()
		return true, &fs.PathError{Op: "fork/exec", Path: path, Err: syscall.Errno(binary.LittleEndian.Uint32(b[:]))}
	}
	return false, err
}

func init() {
	_, joining := os.LookupEnv(joinEnv)
	_, pidding := os.LookupEnv(pidEnv)
	if joining || pidding {
		os.Exit(shim())
	}
}

// shimPath is guardrun's own binary, as a child sees it between fork and
// exec.
const shimPath = "/proc/self/exe"

// shim is guardrun's own binary between fork and the command's exec, for
// the join start (joinEnv: wait until guardrun has moved this process into
// the group and says go) and for WithPidEnv (pidEnv: set a variable to
// this process's pid), or both at once; then it execs the command
// (os.Args[1], with os.Args[2:] as its argv). It runs from package
// initialisation, so every binary that starts children through this
// package (guardrun, and each test binary) is a shim when asked, with
// nothing to forget in its main.
//
// An exec that fails is reported, as its errno, on each descriptor the
// markers name; each is close-on-exec, so EOF there is success.
func shim() int {
	if len(os.Args) < 3 {
		fmt.Fprintf(os.Stderr, "guardrun: %s or %s is set, but this process is not a start that guardrun made\n", joinEnv, pidEnv)
		return 125
	}
	var report []int
	if v, ok := os.LookupEnv(joinEnv); ok {
		fd, code := awaitJoin(v)
		if code != 0 {
			return code
		}
		report = append(report, fd)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, joinEnv+"=") || strings.HasPrefix(kv, pidEnv+"=")
	})
	if v, ok := os.LookupEnv(pidEnv); ok {
		name, fd, ok := parsePidEnv(v)
		if !ok {
			fmt.Fprintf(os.Stderr, "guardrun: %s=%q is set, but this process is not a start that guardrun made\n", pidEnv, v)
			return 125
		}
		unix.CloseOnExec(fd)
		report = append(report, fd)
		env = append(slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") }),
			name+"="+strconv.Itoa(os.Getpid()))
	}
	err := syscall.Exec(os.Args[1], os.Args[2:], env)
	errno, ok := err.(syscall.Errno)
	if !ok {
		errno = syscall.EINVAL
	}
	var msg [4]byte
	binary.LittleEndian.PutUint32(msg[:], uint32(errno))
	for _, fd := range report {
		unix.Write(fd, msg[:])
	}
	return 127
}

// awaitJoin is the join start's side of the shim: wait until guardrun has
// moved this process into the group and says go. It returns the
// descriptor to report an exec on, or 125 without running the command when
// guardrun gave up or died before saying go (EOF): the command never runs
// outside the group.
func awaitJoin(v string) (fd, code int) {
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "guardrun: %s=%q is set, but this process is not a start that guardrun made\n", joinEnv, v)
		return -1, 125
	}
	// A raw read: the runtime does not see the wait, so it hands no P off
	// and starts no thread for it. The process is in the group by the
	// time the read returns, where pids.max may not allow another thread.
	var b [1]byte
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 || n != 1 {
			return -1, 125
		}
		break
	}
	unix.CloseOnExec(fd)
	return fd, 0
}

// startEnv is the environment cmd starts with: its own, or what os/exec
// gives a command with no Env of its own.
func startEnv(cmd *exec.Cmd) []string {
	if cmd.Env != nil {
		return cmd.Env
	}
	env := os.Environ()
	if cmd.Dir != "" {
		if pwd, err := filepath.Abs(cmd.Dir); err == nil {
			env = append(env, "PWD="+pwd)
		}
	}
	return env
}

// shimStartError names the command, not guardrun's binary, when the shim
// could not be started: that is not the command's fault, so not its exit
// code (%v, where os/exec's own error would give 126 or 127).
func shimStartError(err error, path, why string) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == shimPath {
		return fmt.Errorf("start %s through guardrun's own binary, %s: %v", path, why, err)
	}
	return err
}
