package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/guardrun/guardrun/internal/proc"
	"golang.org/x/sys/unix"
)

// The enclosing group: inside a container whose cgroup filesystem guardrun
// may not write, guardrun observes the group it is in itself instead of
// making one for the child.
//
// Docker, Podman, containerd and runc mount the container's cgroupfs
// read-only for an unprivileged container (the OCI runtime spec's default
// /sys/fs/cgroup mount has "ro"), most with a cgroup namespace of their own,
// so /proc/self/cgroup says "0::/" and /sys/fs/cgroup is the container's own
// group. mkdir there fails with EROFS, and guardrun used to fall back to
// sampling RSS (none), although the kernel enforces the container's
// memory.max and counts each OOM kill in its memory.events. What guardrun
// can do there without a write:
//   - the ceiling is the container's own (memory.max; v1
//     memory.limit_in_bytes); a --max below it is enforced by the none
//     backend's RSS sampler, which also tracks the child's tree;
//   - the child starts plainly: it inherits the group;
//   - an OOM kill is read from the group's counters (memory.events
//     oom_kill; v1 memory.oom_control oom_kill), event-driven on v2;
//   - Kill and Remove kill the child's own process tree, never the group:
//     guardrun is in it (no cgroup.kill, no rmdir).
//
// The group is shared with guardrun and anything else the container runs,
// so its figures (usage, peak, the working set) are the container's, and
// an OOM kill counted there is of any process in it; the kernel picks the
// largest, the leaking child, and guardrun's verdict still asks that SIGKILL
// ended the child.

// v2OOMGroup is 1 when the kernel kills the whole group at one OOM kill
// (Documentation/admin-guide/cgroup-v2.rst, memory.oom.group). The
// kubelet sets it on every container on cgroup v2 from Kubernetes 1.28
// (kubernetes/kubernetes#117793) unless singleProcessOOMKill is set (1.32).
const v2OOMGroup = "memory.oom.group"

// Enclosure is what an enclosing group is, for the log's first line and
// guardrun check.
type Enclosure struct {
	Backend string // "v2" or "v1": the hierarchy
	Dir     string // the group's directory (v1: in the memory hierarchy)
	// ReadOnly: the cgroupfs is mounted read-only (EROFS), as container
	// engines mount it; else this user may not write there.
	ReadOnly bool
	Why      string // what refused guardrun its own group
	Ceiling  uint64 // the container's memory.max / memory.limit_in_bytes; 0: none
	Max      uint64 // --max; 0: not given
	// OOMGroup: memory.oom.group is 1, so one OOM kill takes the whole
	// container, guardrun with it.
	OOMGroup bool
	// OOMPolled: v1 on a read-only cgroupfs, where cgroup.event_control
	// cannot be written and no OOM eventfd can be had.
	OOMPolled bool
	// Shielded: guardrun set its own oom_score_adj to -1000 (see shield);
	// ShieldErr says why it could not.
	Shielded  bool
	ShieldErr string
}

// Sampled reports whether guardrun's RSS sampler enforces --max: it is
// below the container's ceiling, or the container has none.
func (e Enclosure) Sampled() bool { return e.Max > 0 && (e.Ceiling == 0 || e.Max < e.Ceiling) }

// ChildCeiling is the ceiling that applies to the child: a sampled --max,
// or the container's.
func (e Enclosure) ChildCeiling() uint64 {
	if e.Sampled() {
		return e.Max
	}
	return e.Ceiling
}

// limitFile is the hierarchy's name for the ceiling.
func (e Enclosure) limitFile() string {
	if e.Backend == "v1" {
		return v1Limit
	}
	return v2Max
}

// String is the log's first line and guardrun check's verdict.
func (e Enclosure) String() string {
	why := "read-only cgroupfs"
	if !e.ReadOnly {
		why = fmt.Sprintf("cgroupfs not writable by uid %d", os.Geteuid())
	}
	s := fmt.Sprintf("observing the container's own group (%s): ceiling = the container's %s", why, e.limitFile())
	if e.Ceiling > 0 {
		s += " (" + FormatSize(e.Ceiling) + ")"
	} else {
		s += " (none: the container has no memory limit)"
	}
	if e.Shielded {
		s += "; guardrun's own oom_score_adj is -1000, so that the kernel's OOM killer never takes it after the child, and the child and hooks get back the score guardrun was given"
	}
	if e.OOMGroup {
		s += "; memory.oom.group is 1 there: one OOM kill takes the whole container, guardrun with it, and no verdict is told"
	}
	return s
}

// Notes are the warnings the run should give once: how --max is held,
// that guardrun could not keep the OOM killer off itself, and how OOM
// kills are found on v1.
func (e Enclosure) Notes() []string {
	var ns []string
	switch {
	case e.Sampled() && e.Ceiling > 0:
		ns = append(ns, fmt.Sprintf("--max %s is below the container's %s (%s): guardrun enforces it by sampling the child's RSS every %v, and a fast leak can overshoot it; the kernel still kills at the container's",
			FormatSize(e.Max), e.limitFile(), FormatSize(e.Ceiling), noneSample))
	case e.Sampled():
		ns = append(ns, fmt.Sprintf("--max %s: the container has no memory limit, so guardrun enforces it by sampling the child's RSS every %v, and a fast leak can overshoot it", FormatSize(e.Max), noneSample))
	case e.Max > e.Ceiling:
		ns = append(ns, fmt.Sprintf("--max %s is above the container's %s (%s): the kernel kills at the container's", FormatSize(e.Max), e.limitFile(), FormatSize(e.Ceiling)))
	}
	if e.ShieldErr != "" {
		ns = append(ns, "guardrun shares the container's memory group with its child, and after an OOM kill of the child the kernel may take guardrun too, ending the container (it does, now and then, when the child's memory is not given back at once); guardrun could not set its own oom_score_adj to -1000 ("+e.ShieldErr+"): grant it CAP_SYS_RESOURCE (docker run --cap-add SYS_RESOURCE; Kubernetes: securityContext.capabilities.add [SYS_RESOURCE])")
	}
	if e.OOMPolled {
		ns = append(ns, fmt.Sprintf("cgroup v1 with a read-only cgroupfs: cgroup.event_control cannot be written, so OOM kills are read from %s every %v and at the child's exit, not signalled", v1OOMCtl, noneSample))
	}
	return ns
}

// Enclosing reports whether g observes guardrun's enclosing group, and what
// that group is.
func Enclosing(g Group) (Enclosure, bool) {
	if e, ok := g.(*enclosingGroup); ok {
		return e.Enclosure, true
	}
	return Enclosure{}, false
}

// enclosingGroup observes the group guardrun itself is in.
type enclosingGroup struct {
	Enclosure
	// tree is the child's process tree, as the none backend keeps it:
	// Kill and Procs go by it, and its sampler enforces a sampled --max.
	// Its sampler runs even without one, at about 110 µs a sample, so
	// that Kill finds what the child forked.
	tree    *noneGroup
	started bool

	mu sync.Mutex
	// baseKills and basePeak are the group's oom_kill and peak at Open:
	// the group outlives each child, so a child's figures start there.
	baseKills, basePeak uint64
	seenPeak            uint64 // the highest usage read since Open
}

// cannotWrite: the kernel refused guardrun's write for a reason a
// container gives: a read-only cgroupfs, or no permission.
func cannotWrite(err error) bool {
	return errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
}

// enclosingDir is guardrun's own group in the hierarchy of backend, and
// whether its files can be read. The group is the mount joined with
// /proc/self/cgroup's path; inside a cgroup namespace that is "/", the
// mount itself. A container without one (runc on v1, Docker's
// --cgroupns=host) bind-mounts its own group at the mount point while
// /proc/self/cgroup names it from the host's root: the join is then not
// there, and the mount is the group.
func enclosingDir(h Hierarchy, backend string) (string, bool) {
	mount, own, probe := h.V2, h.V2Own, []string{v2Current, v2Max, v2Events}
	if backend == "v1" {
		mount, own, probe = h.V1Memory, h.V1OwnMemory, []string{v1Usage, v1Limit, v1OOMCtl}
	}
	if mount == "" || own == "" {
		return "", false
	}
	for _, dir := range []string{filepath.Join(mount, own), mount} {
		// v2's root group has no memory.current (CFTYPE_NOT_ON_ROOT):
		// a host's root is never taken for a container's group.
		if readable(dir, probe) {
			return dir, true
		}
	}
	return "", false
}

func readable(dir string, files []string) bool {
	for _, f := range files {
		if unix.Access(filepath.Join(dir, f), unix.R_OK) != nil {
			return false
		}
	}
	return true
}

// openEnclosing observes guardrun's own group in place of the group
// openV2 or openV1 could not make (err), when err says the cgroupfs is
// read-only, or not guardrun's to write and the group is a container's:
// it has a memory limit. Without that a non-root user on a host, in the
// root of a v1 hierarchy or an unlimited session, keeps the loud sampling
// fallback: observing the whole host is no ceiling.
func openEnclosing(h Hierarchy, backend string, o Options, err error) (Group, bool) {
	if !cannotWrite(err) {
		return nil, false
	}
	dir, ok := enclosingDir(h, backend)
	if !ok {
		return nil, false
	}
	g := &enclosingGroup{Enclosure: Enclosure{Backend: backend, Dir: dir, ReadOnly: errors.Is(err, unix.EROFS), Why: err.Error(), Max: o.Limits.Ceiling}}
	s, serr := g.read()
	if serr != nil || (!g.ReadOnly && s.Ceiling == 0) {
		return nil, false
	}
	g.Ceiling, g.baseKills, g.basePeak = s.Ceiling, s.OOMKills, s.Peak
	if backend == "v2" {
		n, _ := readUint(filepath.Join(dir, v2OOMGroup))
		g.OOMGroup = n == 1
	}
	g.OOMPolled = backend == "v1" && g.ReadOnly
	if err := shield(); err != nil {
		g.ShieldErr = err.Error()
	} else {
		g.Shielded = shielded.on
	}
	var sampled Options
	if g.Sampled() {
		sampled.Limits.Ceiling = g.Max
	}
	g.tree = openNone(sampled, "").(*noneGroup)
	return g, true
}

// enclosedError is a forced --cgroup v2 or v1 refused where --cgroup auto
// would observe the enclosing group: err is openV2's or openV1's.
func enclosedError(h Hierarchy, backend string, err error) error {
	if err == nil || !cannotWrite(err) {
		return err
	}
	if _, ok := enclosingDir(h, backend); !ok {
		return err
	}
	return &EnclosedError{Backend: backend, Err: err}
}

// EnclosedError is a forced backend that cannot make a group inside a
// container whose own group guardrun could observe.
type EnclosedError struct {
	Backend string
	Err     error
}

func (e *EnclosedError) Error() string {
	return fmt.Sprintf("--cgroup %s cannot make a group in this container's cgroupfs: %v", e.Backend, e.Err)
}

func (e *EnclosedError) Unwrap() error { return e.Err }

// Hint is the fix, for a hint line.
func (e *EnclosedError) Hint() string {
	return "use --cgroup auto (the default): the container's own memory limit is the ceiling, and its memory." + map[string]string{"v2": "events", "v1": "oom_control"}[e.Backend] + " names each OOM kill"
}

func (g *enclosingGroup) Backend() string { return g.Enclosure.Backend }
func (g *enclosingGroup) Path() string    { return g.Dir }

// read reads the group's own counters, as a group guardrun made is read.
func (g *enclosingGroup) read() (Stats, error) {
	if g.Enclosure.Backend == "v1" {
		return (&v1Group{mem: g.Dir}).Stats()
	}
	// memory.events also has oom_group_kill (Linux 5.16): a kill of the
	// whole group under memory.oom.group, whose oom_kill then counts
	// every process (over-counts). Here the whole group is guardrun's
	// too, so guardrun never reads it rising: it is killed with it.
	return (&v2Group{dir: g.Dir}).Stats()
}

// Start starts the child plainly: it inherits guardrun's group, and gets
// back the oom_score_adj guardrun was given (see shield).
func (g *enclosingGroup) Start(cmd *exec.Cmd) error {
	if err := g.tree.Start(cmd); err != nil {
		return err
	}
	g.started = true
	if err := RestoreOOMScore(cmd.Process.Pid); err != nil {
		// As the other starts abandon a child: killed and reaped.
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("%v; %s was not started", err, cmd.Path)
	}
	return nil
}

// In the container's group, guardrun and its child share one memory
// limit. When the kernel OOM-kills the child, it frees the child's memory
// as the child exits, and until then the group stays full: a page anyone
// there asks for (guardrun reading memory.events: the kernel charges the
// read's buffer to the group) is a second OOM, and the kernel, which
// passes over a victim whose memory it has already taken back, finds
// guardrun the largest process left and kills it, and with it the
// container. BenchmarkContainerOOMKill saw it in the VM about once in
// fifteen kills of a child leaking 16 MiB every 10 ms, and CI once on v1;
// it is a known trait of the OOM killer (linux-test-project/ltp#614,
// sosy-lab/benchexec#1099). oom_score_adj -1000 is the one thing the
// kernel honours there: such a process is never chosen, and a charge
// with no one left to kill waits or fails instead. It takes
// CAP_SYS_RESOURCE, which container engines leave out by default, so
// without it guardrun says so once (Notes). A process guardrun starts
// would inherit -1000: it gets the old score back at once (the child in
// Start, the helpers in supervise.StartHelper), microseconds after its
// exec.
var shielded struct {
	sync.Mutex
	on   bool
	orig int
}

// shield sets guardrun's own oom_score_adj to -1000, once per process.
func shield() error {
	shielded.Lock()
	defer shielded.Unlock()
	if shielded.on {
		return nil
	}
	orig, err := proc.OOMScoreAdj(os.Getpid())
	if err != nil {
		return err
	}
	if orig == -1000 {
		return nil // given so: nothing of guardrun's doing to undo
	}
	if err := proc.SetOOMScoreAdj(os.Getpid(), -1000); err != nil {
		return err
	}
	shielded.on, shielded.orig = true, orig
	return nil
}

// RestoreOOMScore gives pid, a process guardrun has just started, the
// oom_score_adj guardrun had before shield; nothing when it never shielded
// itself.
func RestoreOOMScore(pid int) error {
	shielded.Lock()
	on, orig := shielded.on, shielded.orig
	shielded.Unlock()
	if !on {
		return nil
	}
	err := proc.SetOOMScoreAdj(pid, orig)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return nil // it has exited already, and was reaped or is being
	}
	if err != nil {
		return fmt.Errorf("give process %d back its oom_score_adj %d: %w", pid, orig, err)
	}
	return nil
}

// Stats is the group's reading, from the child's start: oom_kill counts
// from its figure at Open, and the peak is the group's when it rose since
// (or at an OOM kill, which means usage reached the ceiling), else the
// highest usage read. The ceiling is the one that applies to the child,
// and the sampler's kills of a sampled --max count as OOM kills, as the
// none backend counts them.
func (g *enclosingGroup) Stats() (Stats, error) {
	s, err := g.read()
	if err != nil {
		return s, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seenPeak = max(g.seenPeak, s.Current)
	kills := s.OOMKills - min(s.OOMKills, g.baseKills)
	if s.Peak <= g.basePeak && kills == 0 {
		s.Peak = g.seenPeak
	}
	t, _ := g.tree.Stats()
	s.OOMKills = kills + t.OOMKills
	s.Ceiling = g.ChildCeiling()
	return s, nil
}

// Watch on the enclosing group reads the same files the group's own
// watches read, and writes nothing:
//   - v2: as a v2 group's (v2Group.Watch): inotify IN_MODIFY on
//     memory.events for OOM kills, the threshold poll for the threshold.
//     A PSI trigger is refused: it is written to memory.pressure, which
//     a read-only cgroupfs refuses.
//   - v1 where cgroup.event_control can be written: as a v1 group's.
//   - v1 on a read-only cgroupfs: no eventfd can be registered, so the
//     watcher polls memory.oom_control every noneSample for oom_kill, and
//     the threshold is polled too (the threshold poll).
//
// A sampled --max kill is sent as an OOMKill by the sampler, as on none.
func (g *enclosingGroup) Watch(s WatchSpec) (*Watcher, error) {
	if s.Trigger != "" && g.ReadOnly {
		return nil, fmt.Errorf("memory pressure triggers (PSI) are written to %s, and the container's cgroupfs is read-only", filepath.Join(g.Dir, v2Pressure))
	}
	var w *Watcher
	var err error
	switch {
	case g.Enclosure.Backend == "v2":
		w, err = (&v2Group{dir: g.Dir}).Watch(s)
	case !g.OOMPolled:
		w, err = (&v1Group{mem: g.Dir}).Watch(s)
	default:
		w, err = g.pollV1(s)
	}
	if err != nil {
		return nil, err
	}
	if g.Sampled() && s.OOM {
		t := g.tree
		t.mu.Lock()
		t.watcher, t.oom = w, true
		t.mu.Unlock()
		w.stop = func() {
			t.mu.Lock()
			if t.watcher == w {
				t.watcher = nil
			}
			t.mu.Unlock()
		}
	}
	return w, nil
}

// pollV1 watches a v1 group it may not register eventfds in.
func (g *enclosingGroup) pollV1(s WatchSpec) (*Watcher, error) {
	if s.Trigger != "" {
		return nil, errors.New("memory pressure triggers (PSI) need cgroup v2; this group is on v1")
	}
	w := newWatcher()
	if s.Threshold > 0 {
		c := &crossing{w: w, threshold: s.Threshold, backend: "v1",
			usage: filepath.Join(g.Dir, v1Usage), stat: filepath.Join(g.Dir, memoryStat)}
		w.add(watch{fd: -1, first: 0, check: func(bool) time.Duration { return c.look() }})
	}
	if s.OOM {
		oomCtl := filepath.Join(g.Dir, v1OOMCtl)
		last, err := readKey(oomCtl, "oom_kill")
		if err != nil {
			return w.fail(fmt.Errorf("read oom_kill from %s: %w", oomCtl, err))
		}
		w.add(watch{fd: -1, first: noneSample, check: func(bool) time.Duration {
			if n, err := readKey(oomCtl, "oom_kill"); err == nil && n > last {
				last = n
				w.send(OOMKill)
			}
			return noneSample
		}})
	}
	return w.start()
}

// Procs lists the child's tree, freshly read, not the group: the group
// holds guardrun and whatever else the container runs.
func (g *enclosingGroup) Procs() ([]int, error) {
	if g.started {
		g.tree.sample()
	}
	return g.tree.Procs()
}

// Kill kills the child's tree, freshly read: never cgroup.kill, never the
// group's cgroup.procs, which list guardrun and whatever else the
// container runs.
func (g *enclosingGroup) Kill() error {
	if g.started {
		g.tree.sample()
	}
	return g.tree.Kill()
}

// Remove kills what is left of the child's tree and leaves the group,
// which is the container's: nothing to rmdir.
func (g *enclosingGroup) Remove() error { return g.tree.Remove() }
