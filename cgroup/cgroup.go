// Package cgroup owns what the kernel enforces and reports for one guarded
// run: a memory-limited group (cgroup v2, cgroup v1, or a best-effort
// fallback with no cgroup at all), the child started inside it, and the
// figures read back from it (usage, peak, OOM kills).
//
// It leaves process lifecycle (signals, waiting, restarts) to package
// supervise: a Group starts a child and reports on it, nothing more.
//
// It writes the kernel's files itself, with no cgroup library. guardrun
// once made its groups with the cgroups v3 library (cgroup1.New,
// cgroup2.NewManager) and registered v1 events with its
// RegisterMemoryEvent, and that library cannot serve it. guardrun already
// wrote stats, procs, memory.stat, swap.max, the kill loops, rmdir and
// the task moves beside it, and used it only to mkdir a group, write 3-4
// limit files and one cgroup.event_control line. Its Stat reads every
// controller's files into protobuf metrics where a sample needs two
// files: measured here on a v1 memory group, 300 µs and 285 allocations
// a call, against 100 µs and 44 for Stats. Its NewSystemd connects to
// the system bus only and always puts the scope in system.slice without
// Delegate, so it cannot serve a user manager (go-systemd's dbus package
// can). Its v2 Kill fallback logs through logrus, past the program's
// slog. And it linked cilium/ebpf, logrus, its own log package, godbus,
// the OCI runtime spec and protobuf into guardrun: 4.7 MB of its 29.5 MB
// binary.
package cgroup

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"unicode"
)

// Limits are what a run asks the kernel to enforce. Zero means "not set".
type Limits struct {
	Ceiling uint64 // --max: memory.max / memory.limit_in_bytes
	SwapMax uint64 // memory.swap.max; on v1 memsw.limit_in_bytes = Ceiling+SwapMax
	PidsMax int64  // pids.max
	High    uint64 // memory.high (v2) / memory.soft_limit_in_bytes (v1)
	// SwapSet distinguishes an explicit --swap-max 0 from "unset". guardrun
	// defaults swap to 0 so the ceiling is the ceiling (README, "How it behaves").
	SwapSet bool
}

// Stats is one reading of the group.
type Stats struct {
	Current  uint64 // memory.current / memory.usage_in_bytes: all the group is charged for
	Peak     uint64 // memory.peak / memory.max_usage_in_bytes
	Ceiling  uint64 // memory.max / memory.limit_in_bytes, as the kernel holds it
	OOMKills uint64 // memory.events oom_kill / memory.oom_control oom_kill
	High     uint64 // memory.events high: times usage hit memory.high (v2 only)
	// WorkingSet is the memory the kernel cannot simply reclaim: Current
	// less the page cache that is not shmem (see WorkingSet). Thresholds,
	// the leak forecast and every figure a person judges by read this.
	WorkingSet uint64
	// Cache is the group's page cache, shmem and tmpfs included
	// (memory.stat file on v2, total_cache on v1).
	Cache uint64
	// MemoryStat is memory.stat as read for the working set: the
	// kernel's breakdown of the usage, in bytes; nil without a cgroup.
	MemoryStat map[string]uint64
}

// Group is one run's cgroup. Every backend implements it the same way.
type Group interface {
	// Backend is "v2", "v1" or "none".
	Backend() string
	// Path is where the group lives ("" for none).
	Path() string
	// Start starts cmd so that its first instruction already runs inside
	// the group: no allocation escapes the ceiling.
	Start(cmd *exec.Cmd) error
	// Stats reads usage, peak, limit, OOM kills, the working set and the
	// page cache.
	Stats() (Stats, error)
	// Watch reports, while the child lives, its working set reaching a
	// threshold, a PSI trigger firing, and each OOM kill in the group
	// (see WatchSpec); Close the Watcher when done.
	Watch(WatchSpec) (*Watcher, error)
	// Procs lists the processes in the group.
	Procs() ([]int, error)
	// Kill sends SIGKILL to every process in the group.
	Kill() error
	// Remove kills what is left and removes the group. Safe to call twice.
	Remove() error
}

// Options select and shape a group.
type Options struct {
	Name    string
	Backend string // auto, v2, v1 or none
	Limits  Limits
	// Held is the run's hold on Name (TakeHold), for the groups of its
	// later children; nil: Open takes the hold, and the group keeps it
	// until Remove unless TakeHold takes it over.
	Held *Hold
}

// TakeHold takes over the name's hold from a group Open made, for the run
// to keep across its children (Options.Held) and Release at its end; nil
// for a group that holds none (none, a container's own group).
func TakeHold(g Group) *Hold {
	var h **Hold
	switch g := g.(type) {
	case *v1Group:
		h = &g.hold
	case *v2Group:
		h = &g.hold
	default:
		return nil
	}
	held := *h
	*h = nil
	return held
}

// Backends that Open accepts.
var Backends = []string{"auto", "v2", "v1", "none"}

// ErrBusy means a live guardrun already holds a group of that name.
var ErrBusy = errors.New("a run of that name is active")

// ValidName reports why name cannot name a cgroup, or nil. Names become one
// path element under guardrun's root, so anything that could climb out of
// it ("/", ".."), hide (leading "."), or confuse a log line (control
// characters) is refused.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > 128:
		return fmt.Errorf("name %q is longer than 128 bytes", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("name %q starts with a dot", name)
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("name %q contains a slash", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("name %q contains a space or control character", name)
		}
	}
	return nil
}

// NameFor derives a run name from a command: the base name of argv[0],
// with anything ValidName would refuse replaced by "-".
func NameFor(argv0 string) string {
	if i := strings.LastIndexByte(argv0, '/'); i >= 0 {
		argv0 = argv0[i+1:]
	}
	b := []rune(strings.TrimLeft(argv0, "."))
	for i, r := range b {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar {
			b[i] = '-'
		}
	}
	s := string(b)
	if len(s) > 100 {
		s = s[:100]
	}
	if s == "" || ValidName(s) != nil {
		return "run"
	}
	return s
}

// Open creates the group for one run with the chosen backend. With "auto" it
// takes v2 where the memory controller is on the unified hierarchy, else v1
// where a memory hierarchy is mounted, else none; where the hierarchy is
// not guardrun's to write (a container's read-only cgroupfs), it observes
// the group guardrun is in (Enclosing). A forced backend that is not
// usable is an error, never a silent downgrade.
func Open(o Options) (Group, error) {
	if err := ValidName(o.Name); err != nil {
		return nil, err
	}
	// Refused before anything is made: on v1 guardrun's own thread would
	// join a group this small to fork the child, and be OOM-killed there.
	if m := o.Limits.Ceiling; m > 0 && m < MinCeiling {
		return nil, fmt.Errorf("a memory ceiling of %s cannot hold a process (the least is %s)", bytesWord(m), FormatSize(MinCeiling))
	}
	h := Discover()
	switch o.Backend {
	case "v2":
		g, err := openV2(h, o)
		return g, enclosedError(h, "v2", err)
	case "v1":
		g, err := openV1(h, o)
		return g, enclosedError(h, "v1", err)
	case "none":
		return openNone(o, "--cgroup none was asked for"), nil
	case "auto", "":
	default:
		return nil, fmt.Errorf("unknown cgroup backend %q", o.Backend)
	}
	// A group guardrun may not make (a container's read-only cgroupfs)
	// is observed from the one it is in, where that can be read
	// (enclosing.go); sampling is the last resort.
	if h.V2Memory() {
		g, err := openV2(h, o)
		if err == nil || errors.Is(err, ErrBusy) {
			return g, err
		}
		if g, ok := openEnclosing(h, "v2", o, err); ok {
			return g, nil
		}
		return openNone(o, err.Error()), nil
	}
	if h.V1Memory != "" {
		g, err := openV1(h, o)
		if err == nil || errors.Is(err, ErrBusy) {
			return g, err
		}
		if g, ok := openEnclosing(h, "v1", o, err); ok {
			return g, nil
		}
		return openNone(o, err.Error()), nil
	}
	return openNone(o, h.Why()), nil
}

// undo removes a group that Open made but could not finish, so a failed
// Open leaves nothing behind; a group that will not go is said in the
// error, with its path, rather than left in silence.
func undo(g Group, err error) error {
	if rerr := g.Remove(); rerr != nil {
		return fmt.Errorf("%w; and the group could not be removed: %v", err, rerr)
	}
	return err
}

// ReadUsage reads the usage, peak, working set and page cache of a live
// group from outside the guardrun that owns it, by its backend and
// directory (as a state file records them): `guardrun status` shows
// figures as of now, and the owner need not wake up to write them.
func ReadUsage(backend, dir string) (Stats, error) {
	var s Stats
	var err error
	switch backend {
	case "v2":
		if s.Current, err = readUint(filepath.Join(dir, v2Current)); err != nil {
			return s, err
		}
		if s.Peak, err = readUint(filepath.Join(dir, v2Peak)); err != nil {
			s.Peak = s.Current // memory.peak arrived in Linux 5.19
		}
	case "v1":
		if s.Current, err = readUint(filepath.Join(dir, v1Usage)); err != nil {
			return s, err
		}
		if s.Peak, err = readUint(filepath.Join(dir, v1MaxUsage)); err != nil {
			return s, err
		}
	default:
		return s, fmt.Errorf("no cgroup to read for backend %q", backend)
	}
	stat, err := readStat(filepath.Join(dir, memoryStat))
	if err != nil {
		return s, err
	}
	s.WorkingSet, s.Cache = WorkingSet(backend, s.Current, stat)
	return s, nil
}
