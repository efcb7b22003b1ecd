package observe

import (
	"bytes"
	"context"
	"encoding/json"
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
	rec := NewRecorder(Options{Run: "obs-real", Command: []string{"app", "--token", "s3cr3t"}, Ceiling: 64 << 20, Sample: 20 * time.Millisecond, StateDir: dir})
	var sawState bool
	cfg := supervise.Config{
		Name: "obs-real", Command: testchild.Command("hold", "8", "300ms"), Limits: cgroup.Limits{Max: 64 << 20},
		StopSignal: 15, StopTimeout: time.Second, Sample: 20 * time.Millisecond, Env: testchild.Environ(),
		Events: func(e supervise.Event) {
			rec.Observe(e)
			if _, err := os.Stat(filepath.Join(dir, "obs-real.json")); err == nil {
				sawState = true
			}
		},
	}
	r, err := supervise.Run(context.Background(), cfg)
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
	if strings.Contains(strings.Join(rep.Command, " "), "s3cr3t") {
		t.Errorf("the report carries a secret: %q", rep.Command)
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
		{supervise.Event{Kind: supervise.Started, Pid: 10, Cgroup: "v1:/x"}, PhaseRunning},
		{supervise.Event{Kind: supervise.Sampled, Usage: 50, Peak: 60}, PhaseRunning},
		{supervise.Event{Kind: supervise.OOMKill, Usage: 100, Peak: 100}, PhaseRunning},
		{supervise.Event{Kind: supervise.Exited, Cause: "oom_kill", ExitCode: 137, Peak: 100}, PhaseStarting},
		{supervise.Event{Kind: supervise.Restarting, Delay: time.Second}, PhaseBackoff},
		{supervise.Event{Kind: supervise.Started, Pid: 11, Restarts: 1, Cgroup: "v1:/x"}, PhaseRunning},
		{supervise.Event{Kind: supervise.Stopping, Pid: 11, Restarts: 1}, PhaseStopping},
	}
	for i, s := range steps {
		s.e.Run, s.e.Time = "ph", t0.Add(time.Duration(i)*time.Second)
		rec.Observe(s.e)
		if got := phase(); got != s.want {
			t.Errorf("after %s: phase %s, want %s", s.e.Kind, got, s.want)
		}
	}
	st := rec.Snapshot()
	if st.OOMKills != 1 || st.Restarts != 1 || st.Peak != 100 || st.Pid != 11 || len(st.Last) != lastEvents {
		t.Errorf("state %+v", st)
	}
	if st.Last[len(st.Last)-1].Kind != "stopping" {
		t.Errorf("last event %+v", st.Last[len(st.Last)-1])
	}
	// A name that fell back to NAME-PID moves the state file along.
	rec.Observe(supervise.Event{Kind: supervise.Sampled, Run: "ph-42", Time: t0})
	if _, err := os.Stat(filepath.Join(dir, "ph.json")); !os.IsNotExist(err) {
		t.Error("the old state file stayed")
	}
	if _, err := os.Stat(filepath.Join(dir, "ph-42.json")); err != nil {
		t.Error(err)
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
		Samples: []Point{{t0, 1 << 20}, {t0.Add(time.Second), 1 << 30}, {t0.Add(2 * time.Second), 1536 << 20}}}
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
