package chart

// The chart's drawing pieces for gonum/plot: styles, the plotters of
// usage, levels and restarts, bold glyphs, and human ticks.

import (
	"image/color"
	"math"
	"strconv"
	"strings"
	"time"

	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

func rgb(v uint32) color.RGBA {
	return color.RGBA{R: uint8(v >> 16), G: uint8(v >> 8), B: uint8(v), A: 0xff}
}

// textStyle is the chart's sans-serif from gonum's built-in Liberation
// fonts: nothing depends on the fonts installed where guardrun runs.
func textStyle(size vg.Length, bold bool) text.Style {
	sty := withFont(plot.New().Title.TextStyle, size)
	if bold {
		sty.Font.Weight = xfont.WeightBold
	}
	return sty
}

func withFont(sty text.Style, size vg.Length) text.Style {
	sty.Font = font.From(font.Font{Typeface: "Liberation", Variant: "Sans"}, size)
	return sty
}

func legendStyle() text.Style {
	sty := textStyle(10, false)
	sty.XAlign, sty.YAlign = draw.XLeft, draw.YBottom
	return sty
}

// usageLine is memory over time (usage or the working set), one segment
// per child.
type usageLine struct {
	segs  []plotter.XYs
	style draw.LineStyle
}

func (u usageLine) Plot(c draw.Canvas, p *plot.Plot) {
	x, y := p.Transforms(&c)
	for _, seg := range u.segs {
		pts := make([]vg.Point, len(seg))
		for i, xy := range seg {
			pts[i] = vg.Point{X: x(xy.X), Y: y(xy.Y)}
		}
		if len(pts) == 1 {
			// A child sampled once: a dot, as a one-point line is invisible.
			c.DrawGlyph(draw.GlyphStyle{Color: u.style.Color, Radius: 2.5, Shape: draw.CircleGlyph{}}, pts[0])
			continue
		}
		c.StrokeLines(u.style, c.ClipLinesXY(pts)...)
	}
}

func (u usageLine) Thumbnail(c *draw.Canvas) {
	y := c.Center().Y
	c.StrokeLine2(u.style, c.Min.X, y, c.Max.X, y)
}

// hline is a level across the whole run: the ceiling, --restart-at.
type hline struct {
	y     float64
	style draw.LineStyle
}

func (h hline) Plot(c draw.Canvas, p *plot.Plot) {
	_, y := p.Transforms(&c)
	c.StrokeLine2(h.style, c.Min.X, y(h.y), c.Max.X, y(h.y))
}

func (h hline) Thumbnail(c *draw.Canvas) {
	y := c.Center().Y
	c.StrokeLine2(h.style, c.Min.X, y, c.Max.X, y)
}

// vlines mark moments across the whole height: the restarts. In a crash
// loop they would be closer than the eye can tell apart and grey out the
// chart, so there they shrink to a rug of ticks along the top.
type vlines struct {
	xs    []float64
	style draw.LineStyle
}

func (v vlines) Plot(c draw.Canvas, p *plot.Plot) {
	x, _ := p.Transforms(&c)
	bottom, sty := c.Min.Y, v.style
	if (c.Max.X-c.Min.X)/vg.Length(len(v.xs)) < 12 {
		bottom, sty.Dashes = c.Max.Y-8, nil
	}
	for _, t := range v.xs {
		c.StrokeLine2(sty, x(t), bottom, x(t), c.Max.Y)
	}
}

func (v vlines) Thumbnail(c *draw.Canvas) {
	x := c.Center().X
	c.StrokeLine2(v.style, x, c.Min.Y, x, c.Max.Y)
}

// boldCross and boldRing are gonum's cross and ring, drawn thick enough to
// find at a glance: gonum strokes them half a point wide.
type boldCross struct{}

func (boldCross) DrawGlyph(c *draw.Canvas, sty draw.GlyphStyle, pt vg.Point) {
	c.SetLineStyle(draw.LineStyle{Color: sty.Color, Width: 2.5})
	r := sty.Radius * math.Sqrt2 / 2
	var p vg.Path
	p.Move(vg.Point{X: pt.X - r, Y: pt.Y - r})
	p.Line(vg.Point{X: pt.X + r, Y: pt.Y + r})
	p.Move(vg.Point{X: pt.X - r, Y: pt.Y + r})
	p.Line(vg.Point{X: pt.X + r, Y: pt.Y - r})
	c.Stroke(p)
}

type boldRing struct{}

func (boldRing) DrawGlyph(c *draw.Canvas, sty draw.GlyphStyle, pt vg.Point) {
	c.SetLineStyle(draw.LineStyle{Color: sty.Color, Width: 2})
	var p vg.Path
	p.Move(vg.Point{X: pt.X + sty.Radius, Y: pt.Y})
	p.Arc(pt, sty.Radius, 0, 2*math.Pi)
	p.Close()
	c.Stroke(p)
}

// timeTicks label seconds since the start as a person says them: 0s, 30s,
// 1m, 2m30s, 1h; sub-second runs in ms.
type timeTicks struct{}

func (timeTicks) Ticks(lo, hi float64) []plot.Tick {
	steps := []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
		3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 2 * 24 * 3600, 7 * 24 * 3600}
	return ticks(lo, hi, steps, func(v float64) string {
		s := (time.Duration(math.Round(v*1000)) * time.Millisecond).String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s") // 2m0s: 2m
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m") // 1h0m: 1h
		}
		return s
	})
}

// byteTicks label bytes in the unit of the axis' top (KiB, MiB, GiB; base
// 1024, as --max takes them), at 1, 2 or 5 of a power of ten in it.
type byteTicks struct{}

func (byteTicks) Ticks(lo, hi float64) []plot.Tick {
	unit, name := 1.0, "B"
	for i, n := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if u := math.Pow(1024, float64(i+1)); hi >= 2*u {
			unit, name = u, n
		}
	}
	var steps []float64
	for e := -2.0; e <= 4; e++ {
		for _, m := range []float64{1, 2, 5} {
			steps = append(steps, m*math.Pow(10, e)*unit)
		}
	}
	return ticks(lo, hi, steps, func(v float64) string {
		if v == 0 {
			return "0"
		}
		return strconv.FormatFloat(math.Round(v/unit*100)/100, 'f', -1, 64) + " " + name
	})
}

// ticks places labelled ticks at the smallest step that gives at most
// seven: more crowd the labels, fewer leave the values to guesswork.
func ticks(lo, hi float64, steps []float64, label func(float64) string) []plot.Tick {
	step := steps[len(steps)-1]
	for _, s := range steps {
		if (hi-lo)/s <= 7 {
			step = s
			break
		}
	}
	var ts []plot.Tick
	for i := math.Ceil(lo / step); i*step <= hi; i++ {
		ts = append(ts, plot.Tick{Value: i * step, Label: label(i * step)})
	}
	return ts
}

// diamond and downTriangle are filled glyphs gonum lacks: a heap OOM's
// diamond stands apart from the kernel's ✕ and from the ▲ of a crossing,
// and a restart before the ceiling points down, where it took the
// memory.
type diamond struct{}

func (diamond) DrawGlyph(c *draw.Canvas, sty draw.GlyphStyle, pt vg.Point) {
	c.SetColor(sty.Color)
	r := sty.Radius
	var p vg.Path
	p.Move(vg.Point{X: pt.X, Y: pt.Y + r})
	p.Line(vg.Point{X: pt.X + r*0.75, Y: pt.Y})
	p.Line(vg.Point{X: pt.X, Y: pt.Y - r})
	p.Line(vg.Point{X: pt.X - r*0.75, Y: pt.Y})
	p.Close()
	c.Fill(p)
}

type downTriangle struct{}

func (downTriangle) DrawGlyph(c *draw.Canvas, sty draw.GlyphStyle, pt vg.Point) {
	c.SetColor(sty.Color)
	r := sty.Radius
	h := r * vg.Length(math.Sqrt(3)) / 2
	var p vg.Path
	p.Move(vg.Point{X: pt.X, Y: pt.Y - r})
	p.Line(vg.Point{X: pt.X + h, Y: pt.Y + r/2})
	p.Line(vg.Point{X: pt.X - h, Y: pt.Y + r/2})
	p.Close()
	c.Fill(p)
}
