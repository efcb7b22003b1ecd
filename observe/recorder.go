// Package observe shows a guarded run to people and tools: a state file
// per live run (read by `guardrun status`), the run report (JSON), the
// memory timeline chart, a summary for CI, and Prometheus metrics.
//
// It takes supervise.Event values and nothing else, as package notify
// does; it never reaches back into the supervisor. Writing a file that
// fails is reported once and never stops supervision.
package observe

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
)

const (
	// maxSamples bounds a report's timeline: 10,000 points are under
	// 1 MiB of JSON and plenty for a chart; a week at 1 s is folded to
	// about one point a minute.
	maxSamples = 10000
	// maxMarks bounds the report's event list: a crash loop that runs for
	// days keeps its first and its latest events, not all of them.
	maxMarks = 2000
	// lastEvents is how many recent events a state file and status show.
	lastEvents = 5
)

// Options describe one run to record.
type Options struct {
	Run       string
	Host      string
	Command   []string
	Ceiling   uint64
	RestartAt uint64
	// Sample is the sampling interval (0: no samples, events only).
	Sample time.Duration
	// StateDir is where the state file goes ("": none).
	StateDir string
	// Pending counts the critical notifications kept for the run because
	// they are not delivered yet; nil: none are kept.
	Pending func() int
	// StateDelay holds the state file back for a run's first moment: a
	// run of a short command (a compiler step in a CI build) ends before
	// anyone could ask `guardrun status` about it, and writing, rewriting
	// and removing its file would be most of what it costs. 0 writes from
	// the first event.
	StateDelay time.Duration
	Log        *slog.Logger
	Now        func() time.Time
}

// Recorder follows one run's events and keeps its State (the state file,
// status, metrics) and its Report (timeline and events). Observe is
// a supervise.Observer; Snapshot and Report are safe from any
// goroutine.
type Recorder struct {
	mu       sync.Mutex
	st       State
	rep      Report
	dir      string
	file     string     // the state file written last; "" before the first
	kept     func() int // counts the run's kept notifications; nil: none
	delay    time.Duration
	born     time.Time   // when the recorder was made, for delay
	held     *time.Timer // the held-back first write; nil: none yet
	ended    bool
	lastPid  int // the child that exited last, for the restart that follows
	log      *slog.Logger
	now      func() time.Time
	failed   map[string]bool // what already failed and was said once
	stride   int             // samples folded into each point
	pending  Point           // the point being folded
	pendingN int             // samples in pending
}

// NewRecorder starts recording a run; the state file appears with its
// first event.
func NewRecorder(o Options) *Recorder {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	cmd := o.Command
	now := o.Now()
	start, _ := procStart(os.Getpid())
	return &Recorder{
		dir: o.StateDir, kept: o.Pending, delay: o.StateDelay, born: time.Now(), log: o.Log, now: o.Now, failed: map[string]bool{}, stride: 1,
		st: State{Schema: StateSchema, Run: o.Run, Guardrun: os.Getpid(), GuardrunStart: start,
			Command: cmd, Phase: PhaseStarting, Ceiling: o.Ceiling, RestartAt: o.RestartAt, Started: now},
		rep: Report{Schema: ReportSchema, Run: o.Run, Host: o.Host, Command: cmd, Ceiling: o.Ceiling,
			RestartAt: o.RestartAt, Started: now, SampleEvery: Duration(o.Sample), Samples: []Point{}, Events: []Mark{}},
	}
}

// Observe records one event. It is called on the supervisor's goroutine
// and only touches memory and, at most, one small file.
func (r *Recorder) Observe(e supervise.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &r.st
	st.Updated = e.Time
	r.rep.PeakWorkingSet = max(r.rep.PeakWorkingSet, e.WorkingSet)
	if e.Kind == supervise.Sampled {
		st.Current, st.WorkingSet, st.Cache = e.Usage, e.WorkingSet, e.Cache
		r.peak(e.Peak, e.Usage)
		r.point(Point{T: e.Time, Usage: e.Usage, WorkingSet: e.WorkingSet})
		r.writeState()
		return
	}
	m := Mark{T: e.Time, Kind: string(e.Kind), Pid: e.Pid, Usage: e.Usage, WorkingSet: e.WorkingSet, Cause: e.Cause, Signal: e.Signal,
		Restarts: e.Restarts, Victim: e.Victim, Message: e.Sentence()}
	if e.Kind == supervise.Exited || e.Kind == supervise.GaveUp || e.Kind == supervise.Stopped {
		m.Code = &e.ExitCode
	}
	if rt := runtimeOf(e); rt != nil {
		m.Runtime, m.HeapLimit = rt.Runtime, rt.HeapLimit
	}
	st.Restarts = e.Restarts
	switch e.Kind {
	case supervise.Started:
		st.Phase, st.Pid, st.ChildStarted, st.LeakRate = PhaseRunning, e.Pid, e.Time, 0
		st.Backend, st.Cgroup = e.Backend, e.Cgroup
		r.rep.Backend, r.rep.Cgroup = e.Backend, e.Cgroup
	case supervise.Exited:
		r.lastPid = e.Pid
		st.Pid, st.Current, st.WorkingSet, st.Cache, st.LeakRate, st.ChildStarted = 0, 0, 0, 0, 0, time.Time{}
		r.peak(e.Peak, 0)
		st.Phase = PhaseStarting // until restarting, stopped or the end says more
	case supervise.OOMKill:
		// One event per kill, told while the child lives: a worker's
		// kill counts as the main child's does.
		st.OOMKills++
		r.peak(e.Peak, e.Usage)
	case supervise.HeapOOM:
		st.HeapOOMs++
		r.peak(e.Peak, e.Usage)
	case supervise.MemoryRestart:
		// The restart's cause; restarting follows, and the count of
		// restarts with it.
		st.MemoryRestarts++
		if st.Pid != 0 {
			st.Phase = PhaseStopping
		}
	case supervise.ThresholdCrossed:
		st.Crossings++
	case supervise.PressureStall:
		st.PressureStalls++
	case supervise.LeakSuspected:
		st.LeakRate = e.Rate
	case supervise.Stopping:
		if st.Pid != 0 {
			st.Phase = PhaseStopping
		}
	case supervise.Restarting:
		st.Phase = PhaseBackoff
		st.LastRestart = lastRestart(e, r.lastPid)
	case supervise.RestartAsked, supervise.RestartScheduled:
		if st.Pid != 0 {
			st.Phase = PhaseStopping
		}
	case supervise.PreflightWait:
		st.Phase = PhaseWaiting
	case supervise.GaveUp:
		st.Phase = PhaseGaveUp
	}
	st.Last = append(st.Last, m)
	if len(st.Last) > lastEvents {
		st.Last = slices.Delete(st.Last, 0, len(st.Last)-lastEvents)
	}
	r.mark(m)
	r.writeState()
}

func (r *Recorder) peak(vals ...uint64) {
	for _, v := range vals {
		r.st.Peak = max(r.st.Peak, v)
	}
	r.rep.Peak = r.st.Peak
}

// point adds a sample. A full timeline is folded to half its length, each
// pair of neighbours into the higher one, so a peak is never lost; from
// then on each point folds twice as many samples (stride), so the whole
// timeline keeps one resolution, the one SampleEvery says.
func (r *Recorder) point(p Point) {
	if r.pendingN == 0 {
		r.pending = p
	} else {
		r.pending = fold(r.pending, p)
	}
	if r.pendingN++; r.pendingN < r.stride {
		return
	}
	s := r.rep.Samples
	if len(s) >= maxSamples {
		half := s[:0]
		for i := 0; i+1 < len(s); i += 2 {
			half = append(half, fold(s[i], s[i+1]))
		}
		r.rep.Samples = half
		r.stride *= 2
		r.rep.SampleEvery *= 2
		return // pending is half of a point at the new stride
	}
	r.rep.Samples = append(s, r.pending)
	r.pendingN = 0
}

// fold makes one point of two neighbours: stamped at the first, each
// figure the higher of the two, so neither line loses its peaks.
func fold(a, b Point) Point {
	a.Usage, a.WorkingSet = max(a.Usage, b.Usage), max(a.WorkingSet, b.WorkingSet)
	return a
}

// mark appends an event; past maxMarks the middle goes and the first half
// stays: how the run began and how it is going now are what a reader wants.
func (r *Recorder) mark(m Mark) {
	if len(r.rep.Events) >= maxMarks {
		keep := maxMarks / 2
		r.rep.Events = slices.Delete(r.rep.Events, keep, keep+1)
		r.rep.EventsDropped++
	}
	r.rep.Events = append(r.rep.Events, m)
}

// Finish records how the run ended and removes the state file: a run that
// ended is not a guarded run any more.
func (r *Recorder) Finish(exit *Exit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Ended = r.now()
	r.rep.Exit = exit
	r.rep.Restarts = r.st.Restarts
	if r.st.Phase != PhaseGaveUp {
		r.st.Phase = PhaseEnded
	}
	r.st.Pid = 0
	r.ended = true
	if r.held != nil {
		r.held.Stop()
	}
	if r.file != "" {
		os.Remove(r.file)
		r.file = ""
	}
}

// Snapshot is the run as it stands. With sampling on, the usage is the
// last sample's, which was just read from the group: the textfile written
// at each sample does not read it a second time. Without sampling, a
// running child's usage is read from its group now.
func (r *Recorder) Snapshot() State {
	r.mu.Lock()
	st := r.st
	st.Last = slices.Clone(st.Last)
	sampled := r.rep.SampleEvery > 0
	r.mu.Unlock()
	if sampled {
		return st
	}
	return Live(st)
}

// Live refreshes a state's usage, working set, page cache and peak from
// its group, when the child
// runs in one.
func Live(st State) State {
	// Only a cgroup file is read: root's status also reads the state
	// files of every user, and a path in one is theirs to write.
	if st.Pid == 0 || !strings.HasPrefix(filepath.Clean(st.Cgroup), "/sys/fs/cgroup/") {
		return st
	}
	if u, err := cgroup.ReadUsage(st.Backend, st.Cgroup); err == nil {
		st.Current, st.WorkingSet, st.Cache, st.Peak = u.Current, u.WorkingSet, u.Cache, max(st.Peak, u.Peak)
	}
	return st
}

// Report is the whole run so far.
func (r *Recorder) Report() *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.rep
	rep.Samples = slices.Clone(rep.Samples)
	if r.pendingN > 0 {
		rep.Samples = append(rep.Samples, r.pending) // the run's last, partly folded point
	}
	rep.Events = slices.Clone(rep.Events)
	rep.Restarts = r.st.Restarts
	rep.PendingNotifications = r.countPending()
	if rep.Ended.IsZero() {
		rep.Ended = r.now()
	}
	return &rep
}

// writeState replaces the run's state file; the caller holds mu.
func (r *Recorder) writeState() {
	if r.dir == "" || r.ended {
		return
	}
	if wait := r.delay - time.Since(r.born); wait > 0 {
		if r.held == nil {
			r.held = time.AfterFunc(wait, func() {
				r.mu.Lock()
				defer r.mu.Unlock()
				r.writeState()
			})
		}
		return
	}
	file := filepath.Join(r.dir, r.st.Run+".json")
	if r.file != "" && r.file != file {
		os.Remove(r.file)
	}
	r.st.PendingNotifications = r.countPending() // a readdir of a few names
	b, err := encodeState(r.st)
	if err == nil {
		err = WriteFile(file, b, 0o644)
	}
	if err != nil {
		r.once("state", "cannot write the state file; `guardrun status` will not show this run", "path", file, "err", err)
		return
	}
	r.file = file
}

// once logs a failure the first time it happens: a state directory that is
// full or read-only must not fill the journal once a second.
func (r *Recorder) once(what, msg string, args ...any) {
	if r.failed[what] {
		return
	}
	r.failed[what] = true
	r.log.Warn(msg, append([]any{"run", r.st.Run}, args...)...)
}

// Failed reports a write that failed to the log, once per kind: used by
// the report, chart and textfile writers at the end and on the way.
func (r *Recorder) Failed(what string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.once(what, "cannot write the "+what, "err", err)
}

// countPending counts the run's kept notifications.
func (r *Recorder) countPending() int {
	if r.kept == nil {
		return 0
	}
	return r.kept()
}

// lastRestart is the record of the restart a restarting event starts;
// pid is the child that ended before it.
func lastRestart(e supervise.Event, pid int) *Restart {
	why := supervise.RestartWhy(e)
	rs := &Restart{T: e.Time, Why: why, Pid: pid, ExitCode: e.ExitCode}
	if e.By != nil {
		uid := e.By.Uid
		rs.By, rs.ByUid = e.By.String(), &uid
	}
	rs.Message = supervise.RestartWords(why, rs.By)
	return rs
}

// runtimeOf is a heap_oom's runtime report, or nil.
func runtimeOf(e supervise.Event) *supervise.RuntimeReport {
	if e.Kind != supervise.HeapOOM || e.Diagnosis == nil {
		return nil
	}
	return e.Diagnosis.Runtime
}
