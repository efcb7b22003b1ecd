package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/guardrun/guardrun/internal/proc"
	"golang.org/x/sys/unix"
)

// readUint reads a one-number kernel file such as memory.current. "max"
// (v2's "no limit") reads as 0.
func readUint(path string) (uint64, error) {
	var buf [64]byte
	b, err := proc.ReadFile(path, buf[:])
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %q: %w", path, err)
	}
	return v, nil
}

// readText reads a small kernel file whole (a mountinfo, a cgroup's
// controllers, its memory.stat) through guardrun's one reader of kernel
// files.
func readText(path string) (string, error) {
	var buf [4096]byte
	b, err := proc.ReadFile(path, buf[:])
	return string(b), err
}

// readKey reads one "key value" line from a flat-keyed kernel file such as
// memory.events or memory.oom_control. A missing key reads as 0.
func readKey(path, key string) (uint64, error) {
	var buf [512]byte
	b, err := proc.ReadFile(path, buf[:])
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, nil
}

// writeFile writes one value to a kernel file; the error names the file.
func writeFile(path, value string) error {
	if err := proc.WriteFile(path, []byte(value)); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, errors.Unwrap(err))
	}
	return nil
}

// limitFile is one limit for a kernel file. A value of 0 is Limits' "not
// set": the file keeps the kernel's default.
type limitFile struct {
	path  string
	value uint64
}

// writeLimits writes, in order, each limit that is set.
func writeLimits(ls ...limitFile) error {
	for _, l := range ls {
		if l.value == 0 {
			continue
		}
		if err := writeFile(l.path, strconv.FormatUint(l.value, 10)); err != nil {
			return err
		}
	}
	return nil
}

// verifyLimits reads the limits back after they were written: a ceiling the
// kernel did not take must never turn into a run without one. The kernel
// keeps whole pages, rounded down, so the memory limit may read up to a page
// less than asked.
func verifyLimits(maxFile, pidsFile string, l Limits) error {
	if l.Ceiling > 0 {
		got, err := readUint(maxFile)
		if err != nil {
			return err
		}
		if page := uint64(os.Getpagesize()); got > l.Ceiling || l.Ceiling-got >= page {
			return fmt.Errorf("%s reads %d after writing %d: the kernel did not take the ceiling", maxFile, got, l.Ceiling)
		}
	}
	if l.PidsMax > 0 {
		got, err := readUint(pidsFile)
		if err != nil {
			return err
		}
		if got != uint64(l.PidsMax) {
			return fmt.Errorf("%s reads %d after writing %d: the kernel did not take the limit", pidsFile, got, l.PidsMax)
		}
	}
	return nil
}

// readPids lists the processes in a cgroup.procs file.
func readPids(procs string) ([]int, error) {
	var buf [512]byte
	b, err := proc.ReadFile(procs, buf[:])
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// killAll SIGKILLs every process listed in procs until the file reads empty.
// A process may fork between our read and our kill, so this loops; pids.max
// bounds a fork bomb, and the deadline bounds the loop. guardrun's own pid
// is skipped: on v1 one of its threads sits in the group for an instant
// while it starts the child (see v1Group.Start).
func killAll(procs string, deadline time.Duration) error {
	self := os.Getpid()
	end := time.Now().Add(deadline)
	for {
		pids, err := readPids(procs)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n := 0
		for _, p := range pids {
			if p != self {
				unix.Kill(p, unix.SIGKILL)
				n++
			}
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("%s: %d processes survived SIGKILL for %s", procs, n, deadline)
		}
		time.Sleep(time.Millisecond)
	}
}

// rmdir removes an empty cgroup directory. A killed process leaves the
// group a moment after SIGKILL, so EBUSY is retried for a while.
func rmdir(dir string) error {
	var err error
	for delay := time.Millisecond; delay < 2*time.Second; delay *= 2 {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(delay)
	}
	return fmt.Errorf("remove %s: %w", dir, err)
}

// A Hold is a run's claim on its name for the whole run, across its
// children. The flock on a child's group (claim) lasts as long as the group,
// and the group goes with its child: in the backoff between two children
// no group holds the name, and another guardrun could take it, so that the
// restart would fail as busy and the service end with 125. The hold is an
// empty directory beside the groups, .hold-NAME (a run name never starts
// with a dot), made once and flocked for the run: another guardrun that
// finds it held falls back to NAME-PID as at any busy name. A guardrun
// killed by SIGKILL leaves it, empty and unheld, for the next to take.
type Hold struct {
	dir  string
	lock *os.File
}

const holdPrefix = ".hold-"

// holdName takes the hold of name in base (the directory of the groups).
func holdName(base, name string) (*Hold, error) {
	dir := filepath.Join(base, holdPrefix+name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	lock, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: the name %s is held by another guardrun (%s)", ErrBusy, name, dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return &Hold{dir: dir, lock: lock}, nil
}

// Release gives the name up: the directory goes first, while the lock is
// still held, so nobody takes a lock on a directory about to go.
func (h *Hold) Release() {
	if h == nil || h.lock == nil {
		return
	}
	unix.Rmdir(h.dir)
	h.lock.Close()
	h.lock = nil
}

// claim creates dir (a cgroup) and takes an exclusive flock on it for the
// life of the run. The lock is how a stale group is told from a live one:
// the kernel drops it when its holder dies, even by SIGKILL. If dir exists
// and nobody holds it, it is the leftover of a killed guardrun: whatever
// still runs in it is killed (procs lists its cgroup.procs files), and it
// is made anew so its counters (peak, oom_kill) start from zero.
// extra are sibling directories of other v1 hierarchies made anew likewise.
func claim(dir string, procs []string, extra ...string) (lock *os.File, stale bool, err error) {
	for attempt := 0; attempt < 2; attempt++ {
		err = os.Mkdir(dir, 0o755)
		fresh := err == nil
		if err != nil && !errors.Is(err, os.ErrExist) {
			return nil, false, err
		}
		lock, err = os.Open(dir)
		if err != nil {
			return nil, false, fmt.Errorf("open %s: %w", dir, err)
		}
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			lock.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, false, fmt.Errorf("%w: %s is held by another guardrun", ErrBusy, dir)
			}
			return nil, false, fmt.Errorf("lock %s: %w", dir, err)
		}
		if fresh {
			for _, d := range extra {
				if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
					lock.Close()
					return nil, false, err
				}
			}
			return lock, stale, nil
		}
		// Left behind by a guardrun that died: empty it and start over.
		stale = true
		for _, p := range procs {
			if err := killAll(p, 5*time.Second); err != nil {
				lock.Close()
				return nil, false, err
			}
		}
		for _, d := range slices.Concat(extra, []string{dir}) {
			if err := rmdir(d); err != nil {
				lock.Close()
				return nil, false, err
			}
		}
		lock.Close()
	}
	return nil, false, fmt.Errorf("%w: %s was re-created by another guardrun", ErrBusy, dir)
}

// readStat reads a flat-keyed file such as memory.stat into a map.
func readStat(path string) (map[string]uint64, error) {
	var buf [4096]byte
	b, err := proc.ReadFile(path, buf[:])
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
				m[k] = n
			}
		}
	}
	return m, nil
}

// Reclaim empties and removes the group of a guardrun that died: lockDir
// is the group's locked directory (v2's group, v1's memory group), others
// are its siblings in other v1 hierarchies. It takes the group's flock
// first: if a new guardrun of the same name holds it already, the group is
// that run's now and is left alone.
func Reclaim(lockDir string, others ...string) error {
	lock, err := os.Open(lockDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	// Wait a moment for the lock: the dead guardrun's fd is closed by the
	// kernel as the process goes, which may trail the sentinel's wake-up.
	for i := 0; ; i++ {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || i == 100 {
			return fmt.Errorf("lock %s: %w", lockDir, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	dirs := append(slices.Clone(others), lockDir) // the locked one last
	var first error
	for _, d := range dirs {
		if err := killAll(filepath.Join(d, cgroupProcs), 5*time.Second); err != nil && first == nil {
			first = err
		}
	}
	for _, d := range dirs {
		if err := rmdir(d); err != nil && first == nil {
			first = err
		}
	}
	// The dead run's hold on its name goes too, when nobody holds it.
	if h, err := os.Open(filepath.Join(filepath.Dir(lockDir), holdPrefix+filepath.Base(lockDir))); err == nil {
		if unix.Flock(int(h.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			unix.Rmdir(h.Name())
		}
		h.Close()
	}
	return first
}

// Dirs are the directories of a group, its locked one first: what a
// sentinel needs to Reclaim it. None for the no-cgroup backend.
func Dirs(g Group) []string {
	switch g := g.(type) {
	case *v2Group:
		return []string{g.dir}
	case *v1Group:
		if g.pids != "" {
			return []string{g.mem, g.pids}
		}
		return []string{g.mem}
	}
	return nil
}
