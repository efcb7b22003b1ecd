package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
	"github.com/guardrun/guardrun/supervise"
)

func TestMain(m *testing.M) {
	testchild.MaybeRun()
	os.Exit(m.Run())
}

// A real run, sampled, recorded: the report has the timeline, the events
// in order and how it ended; the state file lived while the run did.
func TestRecorderFollowsARealRun(t *testing.T) {
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	dir := t.TempDir()
	rec := NewRecorder(Options{Run: "obs-real", Command: []string{"app", "--port", "8080"}, Ceiling: 64 << 20, Sample: 20 * time.Millisecond, StateDir: dir})
	var sawState bool
	cfg := supervise.Config{
		Name: "obs-real", Command: testchild.Command("hold", "8", "300ms"), Limits: cgroup.Limits{Ceiling: 64 << 20},
		StopSignal: 15, StopTimeout: time.Second, Sample: 20 * time.Millisecond, Env: testchild.Environ(),
	}
	r, err := supervise.Run(context.Background(), cfg, rec, supervise.ObserverFunc(func(supervise.Event) {
		if _, err := os.Stat(filepath.Join(dir, "obs-real.json")); err == nil {
			sawState = true
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	rec.Finish(&Exit{Cause: r.Cause, Code: r.ExitCode, Message: r.Summary()})
	if !sawState {
		t.Error("no state file while the run was live")
	}
	if _, err := os.Stat(filepath.Join(dir, "obs-real.json")); !os.IsNotExist(err) {
		t.Errorf("the state file outlived the run: %v", err)
	}
	rep := rec.Report()
	if len(rep.Samples) < 5 {
		t.Errorf("%d samples over ~300ms at 20ms", len(rep.Samples))
	}
	if rep.Peak < 8<<20 {
		t.Errorf("peak %d, the child held 8 MiB", rep.Peak)
	}
	var kinds []string
	for _, m := range rep.Events {
		kinds = append(kinds, m.Kind)
	}
	if got := strings.Join(kinds, ","); got != "started,exited" {
		t.Errorf("events %s", got)
	}
	if rep.Exit == nil || rep.Exit.Code != 0 || rep.Backend != h.Version() {
		t.Errorf("exit %+v backend %q", rep.Exit, rep.Backend)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	json.Unmarshal(b, &back)
	for _, k := range []string{"schema", "run", "command", "ceiling", "started", "ended", "peak", "restarts", "exit", "sample_every", "samples", "events"} {
		if _, ok := back[k]; !ok {
			t.Errorf("report has no %q", k)
		}
	}
	if back["schema"] != ReportSchema || back["sample_every"] != "20ms" {
		t.Errorf("schema %v sample_every %v", back["schema"], back["sample_every"])
	}
}

// The phases follow the lifecycle, and the state file says each.
func TestStatePhases(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	rec := NewRecorder(Options{Run: "ph", StateDir: dir, Ceiling: 100, Now: func() time.Time { return t0 }})
	phase := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "ph.json"))
		if err != nil {
			t.Fatal(err)
		}
		var st State
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		return st.Phase
	}
	steps := []struct {
		e    supervise.Event
		want string
	}{
		{supervise.Event{Kind: supervise.Started, Pid: 10, Backend: "v1", Cgroup: "/x"}, PhaseRunning},
		{supervise.Event{Kind: supervise.Sampled, Usage: 50, Peak: 60}, PhaseRunning},
		// A worker's OOM kill, told while the child lives on.
		{supervise.Event{Kind: supervise.OOMKill, Pid: 10, Victim: &cgroup.Proc{Pid: 12, Command: "node"}, Usage: 100, Peak: 100}, PhaseRunning},
		{supervise.Event{Kind: supervise.OOMKill, Usage: 100, Peak: 100}, PhaseRunning},
		{supervise.Event{Kind: supervise.Exited, Cause: "oom_kill", ExitCode: 137, Peak: 100}, PhaseStarting},
		{supervise.Event{Kind: supervise.Restarting, Delay: time.Second}, PhaseBackoff},
		{supervise.Event{Kind: supervise.Started, Pid: 11, Restarts: 1, Backend: "v1", Cgroup: "/x"}, PhaseRunning},
		{supervise.Event{Kind: supervise.HeapOOM, Pid: 11, Restarts: 1, Usage: 90}, PhaseRunning},
		{supervise.Event{Kind: supervise.Exited, Pid: 11, Restarts: 1, Cause: supervise.CauseHeapOOM, ExitCode: 134, Signal: "SIGABRT"}, PhaseStarting},
		{supervise.Event{Kind: supervise.Started, Pid: 13, Restarts: 2, Backend: "v1", Cgroup: "/x"}, PhaseRunning},
		{supervise.Event{Kind: supervise.MemoryRestart, Pid: 13, Restarts: 2, Reason: "restart_at", Detail: "working set over 90 B for 3s"}, PhaseStopping},
		{supervise.Event{Kind: supervise.Exited, Pid: 13, Restarts: 2, Reason: "restart_at"}, PhaseStarting},
		{supervise.Event{Kind: supervise.Started, Pid: 14, Restarts: 3, Backend: "v1", Cgroup: "/x"}, PhaseRunning},
		{supervise.Event{Kind: supervise.Stopping, Pid: 14, Restarts: 3}, PhaseStopping},
	}
	for i, s := range steps {
		s.e.Run, s.e.Time = "ph", t0.Add(time.Duration(i)*time.Second)
		rec.Observe(s.e)
		if got := phase(); got != s.want {
			t.Errorf("after %s: phase %s, want %s", s.e.Kind, got, s.want)
		}
	}
	st := rec.Snapshot()
	if st.OOMKills != 2 || st.HeapOOMs != 1 || st.MemoryRestarts != 1 || st.Restarts != 3 || st.Peak != 100 || st.Pid != 14 || len(st.Last) != lastEvents {
		t.Errorf("state %+v", st)
	}
	if st.Last[len(st.Last)-1].Kind != "stopping" {
		t.Errorf("last event %+v", st.Last[len(st.Last)-1])
	}
}

// A run that gave up on a crash loop ends in gave_up, not ended: the last
// state a textfile collector keeps says so, for an alert to match.
func TestGaveUpOutlivesTheEnd(t *testing.T) {
	rec := NewRecorder(Options{Run: "loop"})
	for _, e := range []supervise.Event{
		{Kind: supervise.Started, Pid: 10},
		{Kind: supervise.Exited, Pid: 10, Cause: supervise.CauseExited, ExitCode: 1},
		{Kind: supervise.GaveUp, Restarts: 5, Cause: supervise.CauseExited, ExitCode: 1, Detail: "5 restarts in 2s"},
	} {
		e.Run = "loop"
		rec.Observe(e)
	}
	if p := rec.Snapshot().Phase; p != PhaseGaveUp {
		t.Fatalf("phase after gave_up: %s", p)
	}
	rec.Finish(&Exit{Cause: supervise.CauseExited, Code: 1})
	if p := rec.Snapshot().Phase; p != PhaseGaveUp {
		t.Fatalf("phase after the end: %s, want %s", p, PhaseGaveUp)
	}
}

// A long run's timeline is folded, never lost at its peaks, and its event
// list keeps the beginning and the latest.
func TestTimelineIsBoundedAndKeepsPeaks(t *testing.T) {
	t0 := time.Now()
	rec := NewRecorder(Options{Run: "long", Sample: time.Second})
	n := 3*maxSamples + 17
	for i := range n {
		u := uint64(100)
		if i == 12345 {
			u = 1 << 30
		}
		rec.Observe(supervise.Event{Kind: supervise.Sampled, Time: t0.Add(time.Duration(i) * time.Second), Usage: u})
	}
	for i := range 3 * maxMarks {
		rec.Observe(supervise.Event{Kind: supervise.Restarting, Restarts: i, Time: t0})
	}
	rep := rec.Report()
	if len(rep.Samples) > maxSamples || len(rep.Samples) < maxSamples/2 {
		t.Errorf("%d samples kept of %d", len(rep.Samples), n)
	}
	var top uint64
	for _, p := range rep.Samples {
		top = max(top, p.Usage)
	}
	if top != 1<<30 || rep.Peak != 1<<30 {
		t.Errorf("the peak was folded away: %d, report peak %d", top, rep.Peak)
	}
	// 30,017 samples: folded at 10,000 (stride 2) and at 20,000 (stride 4).
	if rep.SampleEvery != Duration(4*time.Second) {
		t.Errorf("sample_every %v after folding twice", time.Duration(rep.SampleEvery))
	}
	for i := 1; i < len(rep.Samples)-1; i++ {
		if d := rep.Samples[i].T.Sub(rep.Samples[i-1].T); d != 4*time.Second {
			t.Fatalf("points %d and %d are %s apart, not one resolution", i-1, i, d)
		}
	}
	if len(rep.Events) != maxMarks || rep.Events[0].Restarts != 0 || rep.Events[len(rep.Events)-1].Restarts != 3*maxMarks-1 {
		t.Errorf("%d events, first %d, last %d", len(rep.Events), rep.Events[0].Restarts, rep.Events[len(rep.Events)-1].Restarts)
	}
}

// A state directory that cannot be written costs one warning, not one per
// sample, and the events keep flowing.
func TestUnwritableStateDirIsSaidOnce(t *testing.T) {
	if os.Geteuid() == 0 {
		// root writes through a 0555 directory: make it a file instead.
	}
	dir := filepath.Join(t.TempDir(), "not-a-dir")
	os.WriteFile(dir, nil, 0o644)
	var log bytes.Buffer
	rec := NewRecorder(Options{Run: "ro", StateDir: dir, Log: slog.New(slog.NewTextHandler(&log, nil))})
	for range 50 {
		rec.Observe(supervise.Event{Kind: supervise.Sampled, Usage: 1, Time: time.Now()})
	}
	if n := strings.Count(log.String(), "cannot write the state file"); n != 1 {
		t.Errorf("%d warnings:\n%s", n, log.String())
	}
	if got := len(rec.Report().Samples); got != 50 {
		t.Errorf("%d samples recorded", got)
	}
}

func TestPrepareStateDirRefusesWhatOthersControl(t *testing.T) {
	base := t.TempDir()
	good := filepath.Join(base, "good")
	if err := PrepareStateDir(good); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(good); fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if err := PrepareStateDir(open); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("world-writable: %v", err)
	}
	link := filepath.Join(base, "link")
	os.Symlink(good, link)
	if err := PrepareStateDir(link); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("symlink: %v", err)
	}
}

// WriteFile replaces a symlink planted at the path; the file it pointed
// to is untouched, and the new file is not world-writable.
func TestWriteFileDoesNotFollowASymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("precious"), 0o600)
	planted := filepath.Join(dir, "report.json")
	os.Symlink(victim, planted)
	if err := WriteFile(planted, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the symlink was followed: victim now %q", b)
	}
	fi, err := os.Lstat(planted)
	if err != nil || fi.Mode()&os.ModeSymlink != 0 || fi.Mode().Perm() != 0o644 {
		t.Errorf("%v %v", fi.Mode(), err)
	}
	if err := WriteFile(filepath.Join(dir, "x"), nil, 0o666); err == nil {
		t.Error("a world-writable mode was accepted")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

// A full disk: the write fails with the path, and no temporary file is
// left behind to fill it further.
func TestWriteFileOnAFullDisk(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	dir := t.TempDir()
	// /dev/full cannot be renamed over, but a write to it shows ENOSPC:
	// write through a directory whose files are on /dev/full is not
	// possible, so check the error path with a missing directory and the
	// ENOSPC path with AppendStepSummary on /dev/full.
	if err := WriteFile(filepath.Join(dir, "nodir", "r.json"), []byte("x"), 0o644); err == nil || !strings.Contains(err.Error(), "r.json") {
		t.Errorf("missing dir: %v", err)
	}
	err := AppendStepSummary("/dev/full", &Report{Run: "x"})
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("/dev/full: %v", err)
	}
}

func TestStepSummary(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	r := &Report{Run: "build", Command: []string{"npm", "run", "build"}, Ceiling: 2 << 30, Peak: 1536 << 20,
		Started: t0, Ended: t0.Add(3*time.Minute + 12*time.Second), Restarts: 0,
		Exit:    &Exit{Cause: "exited", Code: 0, Message: "build exited 0 (peak 1.5 GiB of 2 GiB, ran 3m12s)"},
		Samples: []Point{{T: t0, Usage: 1 << 20}, {T: t0.Add(time.Second), Usage: 1 << 30}, {T: t0.Add(2 * time.Second), Usage: 1536 << 20}}}
	got := StepSummary(r)
	for _, want := range []string{"### ✅ guardrun: build", "| command | `npm run build` |", "| result | build exited 0 (peak 1.5 GiB of 2 GiB, ran 3m12s) (exit 0) |",
		"| peak memory | 1.5 GiB of 2 GiB (75%) |", "| memory over time | `▁▅█` |", "| restarts | 0 |", "| ran | 3m12s |"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	p := filepath.Join(t.TempDir(), "summary.md")
	os.WriteFile(p, []byte("# earlier step\n"), 0o644)
	if err := AppendStepSummary(p, r); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !strings.HasPrefix(string(b), "# earlier step\n### ✅") {
		t.Errorf("not appended:\n%s", b)
	}
	link := filepath.Join(t.TempDir(), "link.md")
	os.Symlink(p, link)
	if err := AppendStepSummary(link, r); err == nil {
		t.Error("appended through a symlink")
	}
}

// Samples carry the working set and the page cache into the state, the
// metrics and the report's points; an exit clears them until the next
// child's first sample.
func TestRecorderKeepsTheWorkingSet(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	rec := NewRecorder(Options{Run: "ws", Sample: time.Second, Now: func() time.Time { return t0 }})
	for i, e := range []supervise.Event{
		{Kind: supervise.Started, Pid: 10, Cgroup: "v2:/sys/fs/cgroup/guardrun/ws"},
		{Kind: supervise.Sampled, Usage: 300 << 20, WorkingSet: 100 << 20, Cache: 210 << 20, Peak: 300 << 20},
		{Kind: supervise.Sampled, Usage: 320 << 20, WorkingSet: 90 << 20, Cache: 240 << 20, Peak: 320 << 20},
	} {
		e.Run, e.Time = "ws", t0.Add(time.Duration(i)*time.Second)
		rec.Observe(e)
	}
	st := rec.Snapshot()
	if st.Current != 320<<20 || st.WorkingSet != 90<<20 || st.Cache != 240<<20 {
		t.Errorf("state: current %d, working set %d, cache %d", st.Current, st.WorkingSet, st.Cache)
	}
	b, _ := encodeState(st)
	for _, want := range []string{`"working_set":94371840`, `"cache":251658240`, `"heap_ooms":0`, `"memory_restarts":0`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("state file lacks %s:\n%s", want, b)
		}
	}
	rep := rec.Report()
	if len(rep.Samples) != 2 || rep.Samples[0].WorkingSet != 100<<20 || rep.Samples[1].WorkingSet != 90<<20 || rep.PeakWorkingSet != 100<<20 {
		t.Errorf("points %+v, peak working set %d", rep.Samples, rep.PeakWorkingSet)
	}
	rec.Observe(supervise.Event{Kind: supervise.Exited, Run: "ws", Time: t0.Add(3 * time.Second), Peak: 320 << 20})
	if st := rec.Snapshot(); st.Current != 0 || st.WorkingSet != 0 || st.Cache != 0 {
		t.Errorf("after the exit: %+v", st)
	}
}

// Folding a long timeline keeps the peaks of both lines, each its own:
// the highest working set need not be at the highest usage.
func TestFoldKeepsBothPeaks(t *testing.T) {
	t0 := time.Now()
	rec := NewRecorder(Options{Run: "fold", Sample: time.Second})
	for i := range maxSamples + 2 {
		u, ws := uint64(100), uint64(50)
		switch i {
		case 4000:
			u = 1000 // a burst of page cache
		case 4001:
			ws = 90 // a heap spike as the cache goes
		}
		rec.Observe(supervise.Event{Kind: supervise.Sampled, Time: t0.Add(time.Duration(i) * time.Second), Usage: u, WorkingSet: ws})
	}
	rep := rec.Report()
	p := rep.Samples[2000] // samples 4000 and 4001, folded
	if len(rep.Samples) > maxSamples || p.Usage != 1000 || p.WorkingSet != 90 || !p.T.Equal(t0.Add(4000*time.Second)) {
		t.Errorf("%d points; the folded one %+v", len(rep.Samples), p)
	}
}

// A report's events keep who the kernel killed and which heap ran out.
func TestMarksOfTheOOMs(t *testing.T) {
	rec := NewRecorder(Options{Run: "m"})
	victim := &cgroup.Proc{Pid: 12, Command: "node", RSS: 90 << 20}
	heap := &supervise.Diagnosis{Runtime: &supervise.RuntimeReport{Runtime: "node", Pid: 11, HeapLimit: 192 << 20}}
	for _, tc := range []struct {
		e    supervise.Event
		want Mark
	}{
		{supervise.Event{Kind: supervise.OOMKill, Pid: 10, Victim: victim, Killer: "the kernel OOM killer", Usage: 256 << 20, WorkingSet: 250 << 20},
			Mark{Kind: "oom_kill", Pid: 10, Victim: victim, Usage: 256 << 20, WorkingSet: 250 << 20}},
		{supervise.Event{Kind: supervise.HeapOOM, Pid: 10, Diagnosis: heap},
			Mark{Kind: "heap_oom", Pid: 10, Runtime: "node", HeapLimit: 192 << 20}},
		{supervise.Event{Kind: supervise.HeapOOM, Pid: 10},
			Mark{Kind: "heap_oom", Pid: 10}},
		{supervise.Event{Kind: supervise.Exited, Pid: 10, Cause: supervise.CauseHeapOOM, Signal: "SIGABRT", ExitCode: 134},
			Mark{Kind: "exited", Pid: 10, Cause: "heap_oom", Signal: "SIGABRT"}},
		{supervise.Event{Kind: supervise.Exited, Pid: 10, Cause: supervise.CauseSignaled, Signal: "SIGTERM", ExitCode: 143, Asked: true},
			Mark{Kind: "exited", Pid: 10, Cause: "signaled", Signal: "SIGTERM"}},
		{supervise.Event{Kind: supervise.Exited, Pid: 10, Cause: supervise.CauseExited, ExitCode: 1, Asked: true},
			Mark{Kind: "exited", Pid: 10, Cause: "exited"}},
		{supervise.Event{Kind: supervise.MemoryRestart, Pid: 10, Reason: "restart_at", Detail: "its working set stayed over 192 MiB for 3s"},
			Mark{Kind: "memory_restart", Pid: 10}},
		{supervise.Event{Kind: supervise.ThresholdCrossed, Pid: 10, Threshold: 192 << 20, Usage: 400 << 20, WorkingSet: 193 << 20},
			Mark{Kind: "threshold_crossed", Pid: 10, Usage: 400 << 20, WorkingSet: 193 << 20}},
	} {
		tc.e.Run = "m"
		rec.Observe(tc.e)
		evs := rec.Report().Events
		got := evs[len(evs)-1]
		got.Code = nil
		// The words are the event's own Sentence (supervise's tests).
		tc.want.Message = tc.e.Sentence()
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.e.Kind, got, tc.want)
		}
	}
}

// The summary names how memory ran out, heap or kernel, with counts over
// the run, and its peaks are the highest of all children.
func TestStepSummaryNamesTheOOMs(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	m := func(kind string, f func(*Mark)) Mark {
		mk := Mark{T: t0, Kind: kind, Pid: 10}
		if f != nil {
			f(&mk)
		}
		return mk
	}
	heap := m("heap_oom", func(mk *Mark) { mk.Runtime, mk.HeapLimit = "node", 192<<20 })
	worker := m("oom_kill", func(mk *Mark) { mk.Victim = &cgroup.Proc{Pid: 11, Command: "node"} })
	main := m("oom_kill", func(mk *Mark) { mk.Victim = &cgroup.Proc{Pid: 10, Command: "node"} })
	for _, tc := range []struct {
		name      string
		r         Report
		want, not []string
	}{
		{"heap OOMs", Report{Events: []Mark{heap, m("started", nil), heap}},
			[]string{"| heap OOMs | 2: died of its JavaScript heap (192 MiB) |"}, []string{"| OOM kills"}},
		{"a heap OOM without the runtime's report", Report{Events: []Mark{m("heap_oom", nil)}},
			[]string{"| heap OOMs | 1: died of its heap |"}, nil},
		{"kernel OOM kills", Report{Events: []Mark{m("oom_kill", nil), m("oom_kill", nil)}},
			[]string{"| OOM kills | 2: killed by the kernel OOM killer |"}, []string{"| heap OOMs"}},
		{"a worker's kill", Report{Events: []Mark{worker}},
			[]string{"| OOM kills | 1: killed by the kernel OOM killer (a worker) |"}, nil},
		{"workers and the main child", Report{Events: []Mark{worker, worker, main}},
			[]string{"| OOM kills | 3: killed by the kernel OOM killer (2 of them workers) |"}, nil},
		{"without a cgroup", Report{Backend: "none", Events: []Mark{m("oom_kill", nil)}},
			[]string{"| OOM kills | 1: killed by guardrun (no cgroup: sampled RSS) |"}, nil},
		{"both", Report{Events: []Mark{heap, main}},
			[]string{"| heap OOMs | 1: died of its JavaScript heap (192 MiB) |", "| OOM kills | 1: killed by the kernel OOM killer |"}, nil},
		{"memory restarts", Report{Restarts: 3, Events: []Mark{m("memory_restart", nil), m("memory_restart", nil)}},
			[]string{"| restarts | 3 (2 by guardrun before the ceiling) |"}, nil},
		{"peaks of all children", Report{Ceiling: 512 << 20, Peak: 500 << 20, PeakWorkingSet: 300 << 20,
			Exit: &Exit{Code: 0, Message: "api exited 0 (peak 100 MiB of 512 MiB, ran 3s)"}},
			[]string{"| peak memory | 500 MiB of 512 MiB (98%) |", "| peak working set | 300 MiB of 512 MiB (59%) |"}, nil},
		{"no working set known", Report{Peak: 500 << 20},
			[]string{"| peak memory | 500 MiB |"}, []string{"working set"}},
	} {
		tc.r.Run = "api"
		got := StepSummary(&tc.r)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: lacks %q:\n%s", tc.name, w, got)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(got, w) {
				t.Errorf("%s: has %q:\n%s", tc.name, w, got)
			}
		}
	}
	// Recorded: the run's peak is the highest child's, not the last's.
	rec := NewRecorder(Options{Run: "api", Ceiling: 512 << 20})
	for _, e := range []supervise.Event{
		{Kind: supervise.Started, Pid: 1},
		{Kind: supervise.Sampled, Usage: 500 << 20, WorkingSet: 300 << 20},
		{Kind: supervise.Exited, Pid: 1, Peak: 500 << 20, ExitCode: 1},
		{Kind: supervise.Started, Pid: 2, Restarts: 1},
		{Kind: supervise.Sampled, Usage: 100 << 20, WorkingSet: 90 << 20, Restarts: 1},
		{Kind: supervise.Exited, Pid: 2, Peak: 100 << 20, Restarts: 1},
	} {
		rec.Observe(e)
	}
	if got := StepSummary(rec.Report()); !strings.Contains(got, "| peak memory | 500 MiB of 512 MiB (98%) |") || !strings.Contains(got, "| peak working set | 300 MiB of 512 MiB (59%) |") {
		t.Errorf("recorded run:\n%s", got)
	}
}
