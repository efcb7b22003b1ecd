package supervise

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/guardrun/guardrun/cgroup"
)

// The variables of systemd's socket-activation protocol (sd_listen_fds(3)):
// the child's descriptors from 3 on are listening sockets, LISTEN_FDS of
// them, named by LISTEN_FDNAMES (colon-separated), for the process whose
// pid is LISTEN_PID alone, so a grandchild that inherits the environment
// does not take them too.
const (
	listenFDs     = "LISTEN_FDS"
	listenFDNames = "LISTEN_FDNAMES"
	listenPID     = "LISTEN_PID"
	// ListenFDsStart is the first of them, SD_LISTEN_FDS_START.
	ListenFDsStart = 3
)

// WithoutListenEnv is env without the socket-activation variables: those
// guardrun got are its own, not the child's.
func WithoutListenEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == listenFDs || k == listenFDNames || k == listenPID
	})
}

// startIn starts cmd in g and, with held sockets, hands them to it.
//
// LISTEN_PID must be the child's own pid, which exists only after fork,
// and os/exec sets the environment before it. So the child starts as
// guardrun's own binary, the shim of cgroup.WithPidEnv, which sets
// LISTEN_PID to its pid and execs the command: inside the group from its
// first instruction, as any start. It costs one exec of guardrun's binary
// and its Go runtime's start before the command's: 3.0 ms a start here
// (median of 500, min 2.3 ms: `GUARDRUN_PID_ENV="LISTEN_PID 3" guardrun
// /bin/true true` against /bin/true under hyperfine, 17 MB binary, 2-core
// host), next to the 100 ms to seconds a Node.js service needs to listen
// again, and paid only with held sockets: without them nothing of this is
// done. A shell (sh -c 'LISTEN_PID=$$ exec "$@"') would cost as much and
// need /bin/sh in every container image.
func startIn(g cgroup.Group, cmd *exec.Cmd, cfg Config) error {
	if len(cfg.ListenFiles) == 0 {
		return g.Start(cmd)
	}
	// Each socket at 3, 4, ... in order; os/exec dup2s them there, which
	// clears close-on-exec on the child's copies alone.
	cmd.ExtraFiles = cfg.ListenFiles
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(WithoutListenEnv(env),
		listenFDs+"="+strconv.Itoa(len(cfg.ListenFiles)),
		listenFDNames+"="+strings.Join(cfg.ListenNames, ":"))
	started, err := cgroup.WithPidEnv(cmd, listenPID)
	if err != nil {
		return err
	}
	return started(g.Start(cmd))
}
