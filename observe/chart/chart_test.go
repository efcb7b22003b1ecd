package chart

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"image/color"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/observe"
	"github.com/guardrun/guardrun/supervise"
)

// The reports in the repository's testdata/report were recorded from
// real runs: a program drove supervise.Run and observe.Recorder (as
// `guardrun --report` does) with a real node child in a real cgroup v1
// group, sampled every 200ms.
//
//	leak.json   a session cache that is never evicted, --max 256M
//	            --restart-at 192M (4s grace), --restart on-failure, 75s:
//	            each child leaks at its own pace, so some are restarted at
//	            --restart-at and others outrun the grace and are OOM-killed
//	flat.json   a node HTTP server answering its own requests, no ceiling,
//	            30s, then stopped with SIGTERM
//	crash.json  node failing at once on a missing module: one sample
//	empty.json  --preflight 48G on a machine with 22.8 GiB available:
//	            never started, no samples
//
// Until supervise's leak detector lands, leak.json's leak_suspected
// events came from a stand-in in the recording program: growth of at
// least 2 MiB/s over a 5s window of the real samples, once per child.

func loadReport(t *testing.T, name string) *observe.Report {
	t.Helper()
	path := filepath.Join("..", "..", "testdata", "report", name+".json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r observe.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &r
}

// svgChart is what a test can see in a chart: its texts and its paths.
type svgChart struct {
	texts []string
	paths []svgPath
}

type svgPath struct {
	style string
	pts   [][2]float64 // in SVG user units, y up (the chart flips its y)
}

func renderSVG(t *testing.T, r *observe.Report) svgChart {
	t.Helper()
	b, err := Draw(r, "svg")
	if err != nil {
		t.Fatal(err)
	}
	var c svgChart
	d := xml.NewDecoder(bytes.NewReader(b))
	var inText bool
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the SVG does not parse: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			switch tok.Name.Local {
			case "text":
				inText = true
				c.texts = append(c.texts, "")
			case "path":
				c.paths = append(c.paths, svgPath{style: attr(tok, "style"), pts: pathPoints(t, attr(tok, "d"))})
			}
		case xml.CharData:
			if inText {
				c.texts[len(c.texts)-1] += string(tok)
			}
		case xml.EndElement:
			inText = inText && tok.Name.Local != "text"
		}
	}
	return c
}

func attr(e xml.StartElement, name string) string {
	for _, a := range e.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

var pathCmd = regexp.MustCompile(`[ML](-?[0-9.e+-]+),(-?[0-9.e+-]+)`)

// pathPoints are the moves and lines of a path: the vertices of a line.
func pathPoints(t *testing.T, d string) [][2]float64 {
	var pts [][2]float64
	for _, m := range pathCmd.FindAllStringSubmatch(d, -1) {
		x, err1 := strconv.ParseFloat(m[1], 64)
		y, err2 := strconv.ParseFloat(m[2], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("path %q: bad point %q", d, m[0])
		}
		pts = append(pts, [2]float64{x, y})
	}
	return pts
}

func hex(c color.RGBA) string { return fmt.Sprintf("#%02X%02X%02X", c.R, c.G, c.B) }

// drawn are the paths stroked or filled in the colour, legend thumbnail
// included.
func (c svgChart) drawn(clr color.RGBA) []svgPath {
	var out []svgPath
	for _, p := range c.paths {
		if strings.Contains(p.style, "stroke:"+hex(clr)) || strings.Contains(p.style, "fill:"+hex(clr)) {
			out = append(out, p)
		}
	}
	return out
}

func (c svgChart) has(t *testing.T, texts ...string) {
	t.Helper()
	for _, want := range texts {
		found := false
		for _, s := range c.texts {
			found = found || s == want
		}
		if !found {
			t.Errorf("no text %q in the chart; texts: %q", want, c.texts)
		}
	}
}

func (c svgChart) hasNone(t *testing.T, prefixes ...string) {
	t.Helper()
	for _, s := range c.texts {
		for _, p := range prefixes {
			if strings.HasPrefix(s, p) {
				t.Errorf("text %q in the chart; want none starting %q", s, p)
			}
		}
	}
}

// line is a memory line's paths: every path in its colour but the
// legend's thumbnail, the one with exactly two points that lie level (a
// segment of the line starts at a child's first, near-empty sample and
// climbs). colorMemory is the solid line: the working set, or usage in a
// report without one; colorUsage is usage behind the working set.
func (c svgChart) line(clr color.RGBA) []svgPath {
	var out []svgPath
	for _, p := range c.drawn(clr) {
		if len(p.pts) != 2 || p.pts[0][1] != p.pts[1][1] {
			out = append(out, p)
		}
	}
	return out
}

// linePoints counts a line's vertices and segments.
func (c svgChart) linePoints(clr color.RGBA) (points, segments int) {
	for _, p := range c.line(clr) {
		points += max(len(p.pts), 1) // a lone sample is a dot
	}
	return points, len(c.line(clr))
}

// usagePoints counts the solid line's vertices and segments.
func (c svgChart) usagePoints() (points, segments int) { return c.linePoints(colorMemory) }

func TestChartLeakShowsCeilingRestartsAndOOMKills(t *testing.T) {
	r := loadReport(t, "leak")
	c := renderSVG(t, r)
	oom, crossed, leak := count(r.Events, "oom_kill"), count(r.Events, "threshold_crossed"), count(r.Events, "leak_suspected")
	starts := count(r.Events, "started")
	if oom == 0 || crossed == 0 || leak == 0 || r.Restarts == 0 || starts != r.Restarts+1 {
		t.Fatalf("the fixture lost its point: %d OOM kills, %d crossings, %d leaks, %d restarts, %d starts", oom, crossed, leak, r.Restarts, starts)
	}
	c.has(t,
		fmt.Sprintf("api: peak 256 MiB of 256 MiB, %d OOM kills, %d restarts", oom, r.Restarts),
		"memory", "time since start (2026-11-27 02:41:53 UTC)", "0s", "30s", "1m", "0", "250 MiB",
		"memory usage", "ceiling 256 MiB", "restart-at 192 MiB",
		fmt.Sprintf("restart (%d)", r.Restarts), fmt.Sprintf("OOM kill (%d)", oom),
		fmt.Sprintf("crossed restart-at (%d)", crossed), fmt.Sprintf("leak suspected (%d)", leak))
	c.hasNone(t, "memory pressure", "no memory samples")

	// Each marker once per event, plus its legend thumbnail.
	for _, m := range []struct {
		what string
		clr  color.RGBA
		want int
	}{
		{"OOM kill", colorOOM, oom},
		{"crossed restart-at", colorCrossed, crossed},
		{"leak suspected", colorLeak, leak},
		{"restart line", colorRestart, r.Restarts},
		{"ceiling", colorCeiling, 1},
		{"restart-at", colorRestartAt, 1},
	} {
		if got := len(c.drawn(m.clr)) - 1; got != m.want {
			t.Errorf("%s drawn %d times; want %d", m.what, got, m.want)
		}
	}

	// One segment per child, as many vertices as samples: the line breaks
	// where a child ended and is not thinned.
	pts, segs := c.usagePoints()
	if segs != starts || pts < len(r.Samples) || pts > len(r.Samples)+2*segs {
		t.Errorf("usage line: %d points in %d segments; want %d samples in %d", pts, segs, len(r.Samples), starts)
	}

	// The ceiling is inside the chart, above every sample, and the OOM
	// kills sit on it.
	ceiling := c.drawn(colorCeiling)[0].pts[0][1]
	for _, p := range c.line(colorMemory) {
		for _, pt := range p.pts {
			if pt[1] > ceiling+0.5 {
				t.Fatalf("usage at y=%g is above the ceiling at y=%g", pt[1], ceiling)
			}
		}
	}
	if ceiling >= chartHeight.Points() {
		t.Errorf("the ceiling at y=%g is outside the %gpt chart", ceiling, chartHeight.Points())
	}
	kill := c.drawn(colorOOM)[0].pts
	if mid := (kill[0][1] + kill[1][1]) / 2; mid < ceiling-1 || mid > ceiling+1 {
		t.Errorf("an OOM kill is drawn at y=%g, not on the ceiling at y=%g", mid, ceiling)
	}
}

func TestChartFlatWithoutCeiling(t *testing.T) {
	r := loadReport(t, "flat")
	c := renderSVG(t, r)
	c.has(t, "web: peak 27.8 MiB", "memory", "time since start (2026-11-27 02:39:39 UTC)", "memory usage", "30s", "25 MiB")
	c.hasNone(t, "ceiling", "restart-at", "restart (", "OOM kill", "crossed", "leak suspected", "no memory samples")
	if n := len(c.drawn(colorCeiling)) + len(c.drawn(colorRestart)) + len(c.drawn(colorOOM)); n != 0 {
		t.Errorf("%d ceiling, restart or OOM kill paths in a run without any", n)
	}
	if pts, segs := c.usagePoints(); segs != 1 || pts < len(r.Samples) || pts > len(r.Samples)+2 {
		t.Errorf("usage line: %d points in %d segments; want %d in 1", pts, segs, len(r.Samples))
	}
}

func TestChartEmptyRunHasANote(t *testing.T) {
	r := loadReport(t, "empty")
	if len(r.Samples) != 0 {
		t.Fatalf("fixture has %d samples", len(r.Samples))
	}
	c := renderSVG(t, r)
	c.has(t, "batch: not started", "memory", "ceiling 48 GiB", "no memory samples", r.Exit.Message)
	c.hasNone(t, "memory usage", "restart (")
	if pts, _ := c.usagePoints(); pts != 0 {
		t.Errorf("usage line with %d points in a run without samples", pts)
	}
}

func TestChartOneSample(t *testing.T) {
	r := loadReport(t, "crash")
	if len(r.Samples) != 1 {
		t.Fatalf("fixture has %d samples", len(r.Samples))
	}
	c := renderSVG(t, r)
	c.has(t, "worker: peak 12.5 MiB of 512 MiB", "memory usage", "ceiling 512 MiB",
		"one memory sample: the run ended before the next", r.Exit.Message)
	// The lone sample is a dot: a filled path, not a one-point line.
	dots := 0
	for _, p := range c.drawn(colorMemory) {
		if strings.Contains(p.style, "fill:"+hex(colorMemory)) {
			dots++
		}
	}
	if dots != 1 {
		t.Errorf("%d dots for one sample", dots)
	}
}

func TestChartNoteWrapsALongExitMessage(t *testing.T) {
	r := loadReport(t, "empty")
	r.SampleEvery = 0
	r.Exit.Message = "gave up on batch, a crash loop: 5 restarts in 1m2s; last: was killed by the kernel OOM killer at its 48 GiB ceiling"
	c := renderSVG(t, r)
	c.has(t, "no memory samples: sampling was off")
	var lines []string
	for i, s := range c.texts {
		if s == "no memory samples: sampling was off" {
			lines = c.texts[i+1:]
			break
		}
	}
	var got []string
	for _, l := range lines {
		if got = append(got, l); strings.HasSuffix(l, "ceiling") {
			break
		}
	}
	if len(got) < 2 || strings.Join(got, " ") != r.Exit.Message {
		t.Fatalf("note lines %q; want the exit message wrapped", got)
	}
	for _, l := range got {
		if len(l) > 60 {
			t.Errorf("note line %q is longer than 60 characters", l)
		}
	}
}

// longRun repeats the leak's sawtooth, events and all, until it has n
// samples: a day-long crash loop, as a folded report holds it.
func longRun(t *testing.T, n int) *observe.Report {
	r := loadReport(t, "leak")
	period := r.Ended.Sub(r.Started)
	samples, events := r.Samples, r.Events
	r.Samples, r.Events = nil, nil
	for k := 0; len(r.Samples) < n; k++ {
		shift := time.Duration(k) * period
		for _, s := range samples {
			if len(r.Samples) < n {
				r.Samples = append(r.Samples, observe.Point{T: s.T.Add(shift), Usage: s.Usage})
			}
		}
		for _, e := range events {
			e.T = e.T.Add(shift)
			r.Events = append(r.Events, e)
		}
		r.Ended = r.Started.Add(shift + period)
	}
	r.Restarts = count(r.Events, "started") - 1
	return r
}

func TestChartTenThousandSamples(t *testing.T) {
	r := longRun(t, 10000)
	c := renderSVG(t, r)
	if pts, _ := c.usagePoints(); pts < 10000 || pts > 10000+2*count(r.Events, "started") {
		t.Errorf("usage line: %d points; want 10000", pts)
	}
	if got := len(c.drawn(colorOOM)) - 1; got != count(r.Events, "oom_kill") {
		t.Errorf("%d OOM kills drawn; want %d", got, count(r.Events, "oom_kill"))
	}
	if got := len(c.drawn(colorRestart)) - 1; got != r.Restarts {
		t.Errorf("%d restarts drawn; want %d", got, r.Restarts)
	}
	c.has(t, fmt.Sprintf("restart (%d)", r.Restarts), "10m", "20m")
	b, err := Draw(r, "png")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

func TestChartPNG(t *testing.T) {
	for _, name := range []string{"leak", "flat", "crash", "empty"} {
		b, err := Draw(loadReport(t, name), "png")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := img.Bounds().Size(); got.X != 1152 || got.Y != 648 {
			t.Errorf("%s: %v; want 1152x648 (8x4.5in at 144 dpi)", name, got)
		}
	}
}

func TestChartIsDeterministic(t *testing.T) {
	for _, format := range []string{"svg", "png"} {
		a, err1 := Draw(loadReport(t, "leak"), format)
		b, err2 := Draw(loadReport(t, "leak"), format)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two charts of one report differ", format)
		}
	}
}

func TestChartRejectsUnknownFormat(t *testing.T) {
	if _, err := Draw(loadReport(t, "flat"), "pdf"); err == nil || !strings.Contains(err.Error(), `"pdf"`) {
		t.Fatalf("err = %v; want one naming the format", err)
	}
}

func TestChartTicks(t *testing.T) {
	for _, tc := range []struct {
		ticker     string
		lo, hi     float64
		wantLabels string
	}{
		{"time", 0, 75, "0s 15s 30s 45s 1m 1m15s"},
		{"time", 0, 0.129, "0s 20ms 40ms 60ms 80ms 100ms 120ms"},
		{"time", 0, 2, "0s 500ms 1s 1.5s 2s"},
		{"time", 0, 3 * 3600, "0s 30m 1h 1h30m 2h 2h30m 3h"},
		{"time", 0, 3 * 86400, "0s 12h 24h 36h 48h 60h 72h"},
		{"bytes", 0, 280 << 20, "0 50 MiB 100 MiB 150 MiB 200 MiB 250 MiB"},
		{"bytes", 0, 1.08 * (1 << 30), "0 200 MiB 400 MiB 600 MiB 800 MiB 1000 MiB"},
		{"bytes", 0, 2.2 * (1 << 30), "0 0.5 GiB 1 GiB 1.5 GiB 2 GiB"},
		{"bytes", 0, 52 << 30, "0 10 GiB 20 GiB 30 GiB 40 GiB 50 GiB"},
		{"bytes", 0, 3000, "0 0.5 KiB 1 KiB 1.5 KiB 2 KiB 2.5 KiB"},
		{"bytes", 0, 1500, "0 500 B 1000 B 1500 B"},
	} {
		var ts []string
		var ticker plot.Ticker = byteTicks{}
		if tc.ticker == "time" {
			ticker = timeTicks{}
		}
		got := ticker.Ticks(tc.lo, tc.hi)
		for _, tk := range got {
			ts = append(ts, tk.Label)
		}
		if s := strings.Join(ts, " "); s != tc.wantLabels {
			t.Errorf("%s ticks %g..%g: %q; want %q", tc.ticker, tc.lo, tc.hi, s, tc.wantLabels)
		}
	}
}

// cacheRun is a run recorded from constructed events, through a Recorder
// as `guardrun --report` records one: a service whose page cache grows
// beside its heap (it serves files). The first child's working set
// stays over --restart-at and guardrun restarts it before the ceiling;
// the second dies of its JavaScript heap; the third has a worker
// OOM-killed at the ceiling and runs on until it is stopped.
func cacheRun(t *testing.T) *observe.Report {
	t.Helper()
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	now := t0
	const mib = 1 << 20
	rec := observe.NewRecorder(observe.Options{Run: "api", Ceiling: 256 * mib, RestartAt: 192 * mib, Sample: time.Second, Now: func() time.Time { return now }})
	emit := func(e supervise.Event) {
		e.Run, e.Time = "api", now
		rec.Observe(e)
	}
	var peak uint64
	var pid int
	crossed := false
	sample := func(ws, cache uint64) {
		peak = max(peak, ws+cache)
		emit(supervise.Event{Kind: supervise.Sampled, Usage: ws + cache, WorkingSet: ws, Cache: cache, Peak: peak, Ceiling: 256 * mib})
		// The kernel's threshold tells each crossing of --restart-at by
		// the working set, once until it falls back under.
		if ws >= 192*mib && !crossed {
			emit(supervise.Event{Kind: supervise.ThresholdCrossed, Pid: pid, Usage: ws + cache, WorkingSet: ws, Threshold: 192 * mib})
		}
		crossed = ws >= 192*mib
		now = now.Add(time.Second)
	}
	child := func(p, restarts int) {
		peak, pid, crossed = 0, p, false
		emit(supervise.Event{Kind: supervise.Started, Pid: pid, Restarts: restarts, Cgroup: "v2:/sys/fs/cgroup/guardrun/api"})
	}
	exit := func(e supervise.Event) {
		e.Kind, e.Peak, e.Ceiling = supervise.Exited, peak, 256*mib
		emit(e)
		now = now.Add(200 * time.Millisecond)
		emit(supervise.Event{Kind: supervise.Restarting, Restarts: e.Restarts, Delay: 200 * time.Millisecond})
	}

	child(100, 0)
	for i := uint64(0); ; i++ {
		ws, cache := (40+3*i)*mib, min(2*i, 50)*mib
		sample(ws, cache)
		if ws >= 199*mib { // over --restart-at for the grace
			emit(supervise.Event{Kind: supervise.MemoryRestart, Pid: 100, Usage: ws + cache, WorkingSet: ws, Reason: "restart_at",
				Detail: "its working set stayed over --restart-at 192 MiB for 2s"})
			exit(supervise.Event{Pid: 100, Cause: supervise.CauseSignaled, Signal: "SIGTERM", ExitCode: 143, Reason: "restart_at"})
			break
		}
	}

	child(200, 1)
	for i := uint64(0); i < 30; i++ {
		sample((40+6*i)*mib, min(3*i, 30)*mib)
	}
	emit(supervise.Event{Kind: supervise.HeapOOM, Pid: 200, Restarts: 1, Usage: 250 * mib, WorkingSet: 220 * mib,
		Diagnosis: &supervise.Diagnosis{Runtime: &supervise.RuntimeReport{Runtime: "node", Pid: 200, HeapLimit: 192 * mib, HeapUsed: 191 * mib,
			Event: "Allocation failed - JavaScript heap out of memory", Stack: []string{"at processRequest (/srv/app.js:12:5)"}}}})
	exit(supervise.Event{Pid: 200, Restarts: 1, Cause: supervise.CauseHeapOOM, Signal: "SIGABRT", ExitCode: 134})

	child(300, 2)
	for i := uint64(0); i < 50; i++ {
		ws, cache := uint64(80*mib), min(4*i, 120)*mib
		if i == 25 {
			ws, cache = 250*mib, 6*mib // a worker's burst, to the ceiling
		}
		sample(ws, cache)
		if i == 25 {
			emit(supervise.Event{Kind: supervise.OOMKill, Pid: 300, Restarts: 2, Usage: 256 * mib, WorkingSet: 250 * mib, Ceiling: 256 * mib,
				Reason: "the kernel OOM killer", Victim: &cgroup.Proc{Pid: 301, Command: "node"}})
		}
	}
	emit(supervise.Event{Kind: supervise.Stopping, Pid: 300, Restarts: 2})
	emit(supervise.Event{Kind: supervise.Exited, Pid: 300, Restarts: 2, Cause: supervise.CauseSignaled, Signal: "SIGTERM", ExitCode: 143, Asked: true, Peak: peak})
	emit(supervise.Event{Kind: supervise.Stopped, Restarts: 2, Signal: "SIGTERM", ExitCode: 143})
	rec.Finish(&observe.Exit{Cause: "signaled", Code: 143, Signal: "SIGTERM", Message: "api was stopped by signal 15 (SIGTERM), as asked (peak 206 MiB of 256 MiB)"})
	return rec.Report()
}

func TestChartDrawsTheWorkingSetOverUsage(t *testing.T) {
	r := cacheRun(t)
	c := renderSVG(t, r)
	c.has(t, "api: peak 256 MiB of 256 MiB (working set 250 MiB), 1 OOM kill, 1 heap OOM, 2 restarts",
		"working set", "usage (with page cache)", "ceiling 256 MiB", "restart-at 192 MiB", "restart (2)",
		"OOM kill (1)", "heap OOM (1)", "restarted before the ceiling (1)", "crossed restart-at (3)")
	c.hasNone(t, "memory usage", "no memory samples")

	for _, m := range []struct {
		what string
		clr  color.RGBA
		want int
	}{
		{"OOM kill", colorOOM, 1},
		{"heap OOM", colorHeapOOM, 1},
		{"restart before the ceiling", colorMemRestart, 1},
		{"crossed restart-at", colorCrossed, 3},
	} {
		if got := len(c.drawn(m.clr)) - 1; got != m.want {
			t.Errorf("%s drawn %d times; want %d", m.what, got, m.want)
		}
	}

	// Both lines, one segment per child, a vertex per sample; the
	// working set never above usage.
	ws, usage := c.line(colorMemory), c.line(colorUsage)
	if len(ws) != 3 || len(usage) != 3 {
		t.Fatalf("%d working set and %d usage segments; want 3 of each", len(ws), len(usage))
	}
	n := 0
	for i := range ws {
		if len(ws[i].pts) != len(usage[i].pts) {
			t.Fatalf("segment %d: %d working set points, %d usage", i, len(ws[i].pts), len(usage[i].pts))
		}
		for j, p := range ws[i].pts {
			n++
			if u := usage[i].pts[j]; p[0] != u[0] || p[1] > u[1]+0.01 {
				t.Fatalf("segment %d point %d: working set at %v, usage at %v", i, j, p, u)
			}
		}
	}
	if n != len(r.Samples) {
		t.Errorf("%d points drawn; want the %d samples", n, len(r.Samples))
	}
	// The usage line is the lighter and the thinner of the two.
	// (An SVG stroke is 1 wide unless it says otherwise.)
	if strings.Contains(usage[0].style, "stroke-width") || !strings.Contains(ws[0].style, "stroke-width:1.5") || usageBehindWidth != 1 {
		t.Errorf("styles: usage %q, working set %q", usage[0].style, ws[0].style)
	}

	// The heap OOM sits on the working set it carried; the OOM kill on
	// usage, at the ceiling.
	ceiling := c.drawn(colorCeiling)[0].pts[0][1]
	kill := c.drawn(colorOOM)[0].pts
	if mid := (kill[0][1] + kill[1][1]) / 2; mid < ceiling-1 || mid > ceiling+1 {
		t.Errorf("the OOM kill is drawn at y=%g, not on the ceiling at y=%g", mid, ceiling)
	}
	// A title wider than the chart puts its counts on a second line.
	r.Run = "payments-api-worker-eu-west"
	long := renderSVG(t, r)
	long.has(t, "payments-api-worker-eu-west: peak 256 MiB of 256 MiB (working set 250 MiB)", "1 OOM kill, 1 heap OOM, 2 restarts")
	for _, format := range []string{"svg", "png"} {
		a, err1 := Draw(cacheRun(t), format)
		b, err2 := Draw(cacheRun(t), format)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: not the same bytes twice (%v, %v)", format, err1, err2)
		}
	}
}
