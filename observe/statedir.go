package observe

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/guardrun/guardrun/internal/proc"
)

// DefaultStateDir is where state files go: /run/guardrun for root, as
// systemd's RuntimeDirectory would put it, $XDG_RUNTIME_DIR/guardrun
// otherwise. A user without a runtime directory gets "" (no state file):
// /tmp is shared, and a name there can be taken by anyone first.
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/run/guardrun"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "guardrun")
	}
	return ""
}

// PrepareStateDir creates dir (0755: status is for every user to read,
// as ps is) and checks that it can be trusted: a real directory, not a
// symlink, owned by this user or root, and writable by nobody else. A
// directory someone else controls could swap a state file for a symlink
// or a lie.
func PrepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state directory %q: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("state directory %q: %w", dir, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir() {
		return fmt.Errorf("state directory %q is not a directory (a symlink?)", dir)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if uid := uint32(os.Geteuid()); st.Uid != uid && st.Uid != 0 {
		return fmt.Errorf("state directory %q belongs to uid %d, not to this user", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("state directory %q is writable by others (mode %v)", dir, fi.Mode().Perm())
	}
	return nil
}

func encodeState(st State) ([]byte, error) {
	b, err := json.Marshal(st) // a few times a second: for tools, not eyes
	return append(b, '\n'), err
}

// procStart is a process's start time in clock ticks since boot, field 22
// of /proc/PID/stat: with the pid it names one process for good, since a
// reused pid starts later.
func procStart(pid int) (uint64, error) {
	st, err := proc.ReadStat(pid)
	return st.StartTime, err
}

// Alive reports whether the guardrun that wrote st still runs: its pid
// exists and started when the state file says. A pid reused by another
// process does not count.
func Alive(st State) bool {
	if st.Guardrun <= 0 {
		return false
	}
	start, err := procStart(st.Guardrun)
	return err == nil && start == st.GuardrunStart
}

// Listed is one state file found by List.
type Listed struct {
	State State
	Path  string
	Stale bool // its guardrun is gone (killed without cleaning up)
}

// List reads the state files in dirs, sorted by run name. Files that do
// not parse as a state are skipped; a missing directory is no runs.
func List(dirs ...string) ([]Listed, error) {
	var out []Listed
	for _, dir := range dirs {
		names, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			return nil, err
		}
		for _, p := range names {
			b, err := os.ReadFile(p)
			if err != nil {
				continue // gone since the glob, or not ours to read
			}
			var st State
			if json.Unmarshal(b, &st) != nil || st.Schema != StateSchema {
				continue
			}
			out = append(out, Listed{State: st, Path: p, Stale: !Alive(st)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].State.Run < out[j].State.Run })
	return out, nil
}

// Clean removes a stale state file. It checks again first: the run may
// have been restarted under the same name since it was listed.
func Clean(l Listed) error {
	b, err := os.ReadFile(l.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st State
	if json.Unmarshal(b, &st) == nil && Alive(st) {
		return nil
	}
	return os.Remove(l.Path)
}
