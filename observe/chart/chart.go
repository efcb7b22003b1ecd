// Package chart draws a run's report as memory over time, in SVG or PNG,
// with gonum/plot. It owns the drawing and guardrun-chart's command line;
// the report itself, and checking a --chart path, are observe's.
//
// It is a package of its own, linked only into guardrun-chart, because Go
// runs every linked package's init at every start: gonum/plot's parses
// its fonts (with fpdf, gob and the latex symbols besides), measured at
// 0.5-1.0 ms of each guardrun start, ~764 KiB of idle memory across
// guardrun and its sentinel, and 8.5 MB of binary, paid by runs that
// draw no chart.
package chart

import (
	"bytes"
	"fmt"
	"image/color"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/observe"
	"github.com/guardrun/guardrun/supervise"
)

// The chart's size: 16:9 at 8 inches fits a laptop screen, a CI summary
// and a slide without scaling the text below readable. A PNG is drawn
// at 144 dpi (1152x648) so it stays sharp on a high-density screen.
const (
	chartWidth  = 8 * vg.Inch
	chartHeight = 4.5 * vg.Inch
	chartDPI    = 144
)

// Each series has a colour of its own: the eye matches the legend by it,
// and the tests find a series in the SVG by it.
var (
	// colorMemory is the solid line: the working set, or usage in a
	// report that has no working set (from before it was kept).
	colorMemory = rgb(0x1f77b4)
	// colorUsage is usage, page cache included, drawn lighter behind the
	// working set: the gap between them is cache the kernel can reclaim.
	colorUsage      = rgb(0x9ecae1)
	colorCeiling    = rgb(0xd62728)
	colorRestartAt  = rgb(0xff7f0e)
	colorRestart    = rgb(0x7f7f7f)
	colorOOM        = rgb(0xc00000)
	colorHeapOOM    = rgb(0xc51b7d)
	colorMemRestart = rgb(0x238b45)
	colorCrossed    = rgb(0xe6550d)
	colorLeak       = rgb(0x7b3294)
	colorPressure   = rgb(0x8c510a)
	colorGrid       = rgb(0xe6e6e6)
	colorNote       = rgb(0x555555)
)

// usageBehindWidth is the usage line's: thinner than the working set's
// 1.5, so the line in front reads as the one that matters.
const usageBehindWidth = vg.Length(1)

// chartMarks are the event kinds drawn as markers, in legend order. A
// heap OOM is a diamond in magenta, apart from the kernel's red ✕: the
// runtime's own limit ended the process, not the ceiling, and the fix is
// a different one.
var chartMarks = []struct {
	kind, label string
	glyph       draw.GlyphStyle
}{
	{"oom_kill", "OOM kill", draw.GlyphStyle{Color: colorOOM, Radius: 6, Shape: boldCross{}}},
	{"heap_oom", "heap OOM", draw.GlyphStyle{Color: colorHeapOOM, Radius: 6, Shape: diamond{}}},
	{"memory_restart", "restarted before the ceiling", draw.GlyphStyle{Color: colorMemRestart, Radius: 5, Shape: downTriangle{}}},
	{"threshold_crossed", "crossed restart-at", draw.GlyphStyle{Color: colorCrossed, Radius: 5, Shape: draw.PyramidGlyph{}}},
	{"leak_suspected", "leak suspected", draw.GlyphStyle{Color: colorLeak, Radius: 5, Shape: boldRing{}}},
	{"pressure", "memory pressure", draw.GlyphStyle{Color: colorPressure, Radius: 4, Shape: draw.BoxGlyph{}}},
}

// Draw draws the report's memory timeline; format is "svg" or "png".
func Draw(r *observe.Report, format string) ([]byte, error) {
	var c vg.CanvasWriterTo
	switch format {
	case "svg":
		// Fonts are not embedded: that would add ~400 KiB per face, and
		// every viewer has a sans-serif to fall back on.
		c = vgsvg.New(chartWidth, chartHeight)
	case "png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(chartWidth, chartHeight), vgimg.UseDPI(chartDPI))}
	default:
		return nil, fmt.Errorf("chart format %q: accepted: svg, png", format)
	}
	if r == nil {
		return nil, fmt.Errorf("chart: no report")
	}
	drawChart(draw.New(c), r)
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("chart: encode %s: %w", format, err)
	}
	if format == "svg" {
		// Liberation Sans is metric-compatible with Arial, so where it is
		// not installed Arial sets the text in the widths it was laid
		// out for; without a fallback a browser would pick a serif.
		return bytes.ReplaceAll(b.Bytes(), []byte("font-family:Liberation Sans;"), []byte("font-family:'Liberation Sans',Arial,Helvetica,sans-serif;")), nil
	}
	return b.Bytes(), nil
}

// drawChart lays out the plot with its legend beside it, outside the data:
// a legend inside would cover the usage line wherever it is placed, since
// a leak climbs through every corner of the chart.
func drawChart(dc draw.Canvas, r *observe.Report) {
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	dc = draw.Crop(dc, 6, -10, 4, -8)

	p, legend, note := buildChart(r)
	width := vg.Length(0)
	for _, e := range legend {
		width = max(width, legendStyle().Width(" "+e.name))
	}
	if width > 0 {
		width += 20 + 14 // thumbnail, gap to the plot
	}
	plotC := draw.Crop(dc, 0, -width, 0, 0)
	plotC.Max.Y -= drawTitle(dc, plotC, p)
	p.Draw(plotC)
	data := p.DataCanvas(plotC)

	l := plot.NewLegend()
	l.Top, l.Left, l.TextStyle, l.Padding = true, true, legendStyle(), 3
	for _, e := range legend {
		l.Add(e.name, e.thumbs...)
	}
	lc := dc
	lc.Min.X, lc.Max.Y = dc.Max.X-width+14, data.Max.Y
	l.Draw(lc)

	if note != "" {
		sty := textStyle(11, false)
		sty.Color, sty.XAlign, sty.YAlign = colorNote, draw.XCenter, draw.YCenter
		data.FillText(sty, data.Center(), note)
	}
}

// drawTitle draws the plot's title itself and returns the height it
// took. gonum centers a title over the plot alone, and one wider than
// that (a long run name, a run with every kind of event) runs off the
// chart's left edge. Here it is centered over the plot where it fits,
// moved right or left to stay within the chart where it does not, and
// past the chart's width the counts go on a line of their own.
func drawTitle(dc, plotC draw.Canvas, p *plot.Plot) vg.Length {
	sty, title := p.Title.TextStyle, p.Title.Text
	p.Title.Text = ""
	if title == "" {
		return 0
	}
	if sty.Width(title) > dc.Max.X-dc.Min.X {
		title = strings.Replace(title, ", ", "\n", 1)
	}
	w := sty.Width(title) // of the widest line
	x := min(max(plotC.Center().X, dc.Min.X+w/2), dc.Max.X-w/2)
	dc.FillText(sty, vg.Point{X: x, Y: dc.Max.Y + sty.FontExtents().Descent}, title)
	return sty.Rectangle(title).Size().Y + p.Title.Padding
}

type legendEntry struct {
	name   string
	thumbs []plot.Thumbnailer
}

// buildChart turns the report into a plot, its legend entries, and a note
// for the middle of an empty chart.
func buildChart(r *observe.Report) (*plot.Plot, []legendEntry, string) {
	p := plot.New()
	p.Title.Text = chartTitle(r)
	p.Title.TextStyle = textStyle(13, true)
	p.Title.Padding = 6
	p.X.Label.Text = "time since start"
	if !r.Started.IsZero() {
		p.X.Label.Text += " (" + r.Started.Format("2006-01-02 15:04:05 MST") + ")"
	}
	p.Y.Label.Text = "memory"
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle = withFont(a.Label.TextStyle, 11)
		a.Tick.Label = withFont(a.Tick.Label, 10)
	}
	p.X.Tick.Marker = timeTicks{}
	p.Y.Tick.Marker = byteTicks{}

	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	grid.Horizontal.Color, grid.Horizontal.Width = colorGrid, 0.75
	p.Add(grid)
	// The legend lists the series by importance, but they are drawn in
	// layers: the levels over the line, so a ceiling stays visible where
	// usage runs along it, and the markers over both.
	const (
		layerRestarts = iota
		layerUsage    // usage, behind the working set
		layerMemory   // the working set (or usage alone)
		layerLevels
		layerMarks
	)
	layers := make([][]plot.Plotter, layerMarks+1)
	var legend []legendEntry
	add := func(name string, layer int, pl interface {
		plot.Plotter
		plot.Thumbnailer
	}) {
		layers[layer] = append(layers[layer], pl)
		legend = append(legend, legendEntry{name, []plot.Thumbnailer{pl}})
	}

	at := func(t time.Time) float64 { return t.Sub(r.Started).Seconds() }
	xmax, ymax := 0.0, float64(max(r.Ceiling, r.RestartAt, r.Peak))
	if !r.Ended.IsZero() {
		xmax = at(r.Ended)
	}
	for _, s := range r.Samples {
		xmax, ymax = max(xmax, at(s.T)), max(ymax, float64(s.Usage))
	}
	solid := draw.LineStyle{Color: colorMemory, Width: 1.5}
	ws := hasWorkingSet(r.Samples)
	switch {
	case len(r.Samples) == 0:
	case ws:
		// The legend names both lines, the working set first: it is what
		// reaches the ceiling.
		add("working set", layerMemory, usageLine{segs: perChild(r, at, workingSetOf), style: solid})
		add("usage (with page cache)", layerUsage, usageLine{segs: perChild(r, at, usageOf), style: draw.LineStyle{Color: colorUsage, Width: usageBehindWidth}})
	default:
		add("memory usage", layerMemory, usageLine{segs: perChild(r, at, usageOf), style: solid})
	}
	if r.Ceiling > 0 {
		l := hline{float64(r.Ceiling), draw.LineStyle{Color: colorCeiling, Width: 1.5, Dashes: []vg.Length{6, 4}}}
		add("ceiling "+cgroup.FormatSize(r.Ceiling), layerLevels, l)
	}
	if r.RestartAt > 0 {
		l := hline{float64(r.RestartAt), draw.LineStyle{Color: colorRestartAt, Width: 1.5, Dashes: []vg.Length{6, 4}}}
		add("restart-at "+cgroup.FormatSize(r.RestartAt), layerLevels, l)
	}

	restarts := vlines{style: draw.LineStyle{Color: colorRestart, Width: 1, Dashes: []vg.Length{2, 3}}}
	first := true
	for _, m := range r.Events {
		xmax = max(xmax, at(m.T))
		if m.Kind == "started" {
			if !first {
				restarts.xs = append(restarts.xs, at(m.T))
			}
			first = false
		}
	}
	if n := len(restarts.xs); n > 0 {
		add(fmt.Sprintf("restart (%d)", n), layerRestarts, restarts)
	}
	for _, k := range chartMarks {
		var pts plotter.XYs
		for _, m := range r.Events {
			if m.Kind == k.kind {
				y := markY(m, r.Samples, ws)
				pts = append(pts, plotter.XY{X: at(m.T), Y: y})
				ymax = max(ymax, y)
			}
		}
		if len(pts) == 0 {
			continue
		}
		s, _ := plotter.NewScatter(pts) // cannot fail: the points are finite
		s.GlyphStyle = k.glyph
		add(fmt.Sprintf("%s (%d)", k.label, len(pts)), layerMarks, s)
	}
	for _, l := range layers {
		p.Add(l...)
	}
	if r.EventsDropped > 0 {
		legend = append(legend, legendEntry{name: fmt.Sprintf("(%d events not kept)", r.EventsDropped)})
	}

	// The axes start at zero and leave room above the ceiling, so the
	// distance to it reads as a share of it; an empty run still gets a
	// scale to show its note on.
	if ymax == 0 {
		ymax = 64 << 20
	}
	if xmax <= 0 {
		xmax = 1
	}
	p.X.Min, p.X.Max = 0, xmax
	p.Y.Min, p.Y.Max = 0, ymax*1.08
	return p, legend, chartNote(r)
}

// hasWorkingSet tells a report that kept the working set from one that
// did not: a live group's working set is hardly ever 0 (the kernel's own
// memory for the group is charged to it and is not cache), so 0
// throughout means "not known". Without a cgroup the working set is RSS,
// as usage is, and one line says it all.
func hasWorkingSet(s []observe.Point) bool {
	for _, p := range s {
		if p.WorkingSet != 0 && p.WorkingSet != p.Usage {
			return true
		}
	}
	return false
}

func usageOf(p observe.Point) float64      { return float64(p.Usage) }
func workingSetOf(p observe.Point) float64 { return float64(p.WorkingSet) }

// markY is where an event sits: on the figure it carried, or on the
// solid line at its time. An OOM kill sits on usage, which the kernel
// holds against the ceiling; the rest sit on the working set, which
// guardrun's thresholds read, where the report has one (ws).
func markY(m observe.Mark, s []observe.Point, ws bool) float64 {
	onWS := ws && m.Kind != "oom_kill"
	switch {
	case onWS && m.WorkingSet > 0:
		return float64(m.WorkingSet)
	case m.Usage > 0:
		return float64(m.Usage)
	case onWS:
		return valueAt(s, m.T, workingSetOf)
	}
	return valueAt(s, m.T, usageOf)
}

// perChild splits the samples into one line per child: nothing ran and
// nothing was sampled between a child's exit and the next start, and a
// line across the gap would draw memory that no process held.
func perChild(r *observe.Report, at func(time.Time) float64, val func(observe.Point) float64) []plotter.XYs {
	var segs []plotter.XYs
	var seg plotter.XYs
	ev := 0
	for _, s := range r.Samples {
		for ; ev < len(r.Events) && !r.Events[ev].T.After(s.T); ev++ {
			if r.Events[ev].Kind == "exited" && len(seg) > 0 {
				segs, seg = append(segs, seg), nil
			}
		}
		seg = append(seg, plotter.XY{X: at(s.T), Y: val(s)})
	}
	if len(seg) > 0 {
		segs = append(segs, seg)
	}
	return segs
}

// chartNote is the text across a chart with fewer than two samples: it
// has no line to read, so the note says why, and how the run ended, which
// is then all there is to know.
func chartNote(r *observe.Report) string {
	var note string
	switch {
	case len(r.Samples) == 0 && r.SampleEvery == 0:
		note = "no memory samples: sampling was off"
	case len(r.Samples) == 0:
		note = "no memory samples"
	case len(r.Samples) == 1:
		note = "one memory sample: the run ended before the next"
	default:
		return ""
	}
	if r.Exit == nil || r.Exit.Message == "" {
		return note
	}
	// Wrapped to stay inside the data area: 60 characters at 11pt are
	// about 300pt of its 420.
	line := ""
	for _, w := range strings.Fields(r.Exit.Message) {
		if line != "" && len(line)+1+len(w) > 60 {
			note, line = note+"\n"+line, ""
		}
		line = strings.TrimPrefix(line+" "+w, " ")
	}
	return note + "\n" + line
}

// chartTitle says the run's outcome in a line: "api: peak 256 MiB of
// 256 MiB (working set 250 MiB), 3 OOM kills, 1 heap OOM, 5 restarts".
func chartTitle(r *observe.Report) string {
	if count(r.Events, "started") == 0 && len(r.Samples) == 0 {
		return r.Run + ": not started"
	}
	s := r.Run + ": peak " + cgroup.FormatSize(r.Peak)
	if r.Ceiling > 0 {
		s += " of " + cgroup.FormatSize(r.Ceiling)
	}
	if r.PeakWorkingSet > 0 && r.PeakWorkingSet != r.Peak {
		// Usage's peak may be mostly page cache: the working set's says
		// how near the ceiling the run really came.
		s += " (working set " + cgroup.FormatSize(r.PeakWorkingSet) + ")"
	}
	if n := count(r.Events, "oom_kill"); n > 0 {
		s += ", " + supervise.Plural(uint64(n), "OOM kill", "OOM kills")
	}
	if n := count(r.Events, "heap_oom"); n > 0 {
		s += ", " + supervise.Plural(uint64(n), "heap OOM", "heap OOMs")
	}
	if r.Restarts > 0 {
		s += ", " + supervise.Plural(uint64(r.Restarts), "restart", "restarts")
	}
	return s
}

// valueAt is the last sample's figure at or before t: where an event
// that carries none of its own sits on the line.
func valueAt(s []observe.Point, t time.Time, val func(observe.Point) float64) float64 {
	i := sort.Search(len(s), func(i int) bool { return s[i].T.After(t) })
	if i == 0 {
		return 0
	}
	return val(s[i-1])
}

// count is how many of the marks are of kind.
func count(ms []observe.Mark, kind string) int {
	n := 0
	for _, m := range ms {
		if m.Kind == kind {
			n++
		}
	}
	return n
}
