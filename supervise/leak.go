package supervise

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/guardrun/guardrun/cgroup"
)

// The leak forecast judges the group's usage over a window: it splits the
// window into leakParts equal parts and takes the lowest sample of each, the
// window's lower envelope. A garbage collector's saw-tooth comes back to its
// baseline in every part, so the envelope follows the baseline and not the
// peaks: a saw-tooth with a flat baseline has a flat envelope, one whose
// baseline rises (a leak under GC) a rising one, and plain growth shows as
// is. On the envelope's points it takes the Theil–Sen slope (the median of
// the pairwise slopes, which a stray point cannot pull) as the rate, and the
// share of pairs that rise (Kendall's concordance) as the evidence that the
// rise is sustained rather than a step or two. Per sample that is one pass
// over the window and 28 slopes to sort: no allocation, about 1.5 µs for 600
// samples (BenchmarkLeakDetectorAdd).
//
// The envelope only sees the baseline if each part holds a trough, so the
// window should span eight GC cycles or more; shorter, the hold below has
// to make up for it. The numbers below were
// chosen on the profiles recorded from real Node.js processes in
// testdata/profiles (scripts/record-profile), which leak_test.go replays:
// there V8's saw-tooth (100 MiB swings, deep troughs every 3-10 s) passes as
// flat from a 20 s window up, where with half the hold below it did not.
const (
	// leakParts: 8 points give 28 pairs, enough for the concordance to
	// mean something, while a part is still long enough to hold a
	// trough.
	leakParts = 8
	// leakConcordance: 23 of the 28 pairs must rise. Plain growth gives
	// 1, and a leak that grows in steps passes from three steps up in a
	// window (24/28); one step gives at most 16/28 and two 21/28. Points
	// in random order reach 23/28 in 1.6% of windows (21/28 in 5.4%); the
	// recorded flat-baseline saw-tooth's envelope reached 0.89, and with
	// half the hold 0.75 let it through once in 300 s at a 30 s window.
	leakConcordance = 0.8
	// leakHoldParts: growth must hold while the window slides by two
	// parts, so that every part boundary has crossed a trough or two. A
	// saw-tooth whose troughs line up with the parts by chance looks like
	// growth for a moment: up to 3.4 s in the recorded one, against a hold
	// of 5 s at a 20 s window and 11 s at 45 s. It delays a report by a
	// quarter window. A stop is held as long: under the recorded leak
	// under GC, a 30 s window's envelope dips flat for a moment when a
	// trough comes late.
	leakHoldParts = 2
	// leakMinGrowth and leakMinShare: growth over the window below
	// max(1 MiB, 1% of the ceiling) is noise, not a leak. The recorded
	// idle HTTP service creeps by 0.5 MiB in 4 min as V8 settles; and at
	// 1% of the ceiling a window, the ceiling is 100 windows away or more,
	// too far for a forecast to matter.
	leakMinGrowth = 1 << 20
	leakMinShare  = 0.01
	// leakWarmup is the least the start-up ramp is given (loading,
	// caches filling, a JIT warming): the detector ignores the first
	// max(window/2, leakWarmup), or a whole window when that is shorter
	// (a window of seconds is for a short job or a test, not for a
	// service that warms up for half a minute). A ramp that outlasts
	// that, and the window and hold after it, is no start-up any more.
	leakWarmup = 30 * time.Second
)

// leakDetector finds sustained growth in a group's usage. Make one for each
// child: each start has its own ramp. Not safe for concurrent use; the
// supervisor feeds it from one goroutine.
type leakDetector struct {
	window    time.Duration
	warmup    time.Duration
	limit     uint64
	minGrowth float64 // bytes over the window

	start    time.Time     // the first sample's
	samples  []leakPoint   // after the warm-up, the last window's, oldest first
	reported bool          // a leak was reported and growth has not stopped since
	since    time.Duration // when the windows began to show growth (once reported: a stop); -1 when the last did not

	// Scratch for trend, kept so that add does not allocate.
	env    [leakParts]leakPoint
	slopes [leakParts * (leakParts - 1) / 2]float64
}

// leakPoint is a sample with its time as an offset from the first: time.Time's
// Sub, at 600 samples a call, was most of the cost of add.
type leakPoint struct {
	at    time.Duration
	usage uint64
}

// leak is sustained growth, as established by a leakDetector.
type leak struct {
	Rate    float64       // bytes per second, > 0
	Left    time.Duration // until usage reaches Ceiling at Rate; 0 when Ceiling is 0 or already reached
	Usage   uint64        // the usage at the sample that established it
	Ceiling uint64        // 0 = none
}

// newLeakDetector judges growth over window against limit, the ceiling in
// bytes (0 = none).
func newLeakDetector(window time.Duration, limit uint64) *leakDetector {
	return &leakDetector{
		window:    window,
		warmup:    max(window/2, min(leakWarmup, window)),
		limit:     limit,
		minGrowth: max(leakMinGrowth, leakMinShare*float64(limit)),
		since:     -1,
	}
}

// add takes the next sample. It returns a leak once, when growth over the
// window is first established, and again only after growth stopped (a
// flat window) and then resumed.
func (d *leakDetector) add(s Sample) (leak, bool) {
	if d.start.IsZero() {
		d.start = s.Time
	}
	now := s.Time.Sub(d.start)
	if now < d.warmup {
		return leak{}, false
	}
	if n := len(d.samples); n > 0 && now <= d.samples[n-1].at {
		return leak{}, false // out of order: the parts need times that rise
	}
	from := now - d.window
	old := 0
	for old < len(d.samples) && d.samples[old].at < from {
		old++
	}
	// Shifting down, not reslicing, keeps one backing array for ever.
	d.samples = append(d.samples[:copy(d.samples, d.samples[old:])], leakPoint{now, s.Usage})
	if from < d.warmup {
		return leak{}, false // not a full window yet
	}
	rate, rising, ok := d.trend(from, now)
	if !ok {
		d.since = -1 // what held before a stall need not after it
		return leak{}, false
	}
	growth := rate * d.window.Seconds()
	if d.reported {
		// Growth stopped: a flat window, held like growth is. Below half
		// the threshold, so a leak that hovers about it does not stop
		// and start, and report, every few samples.
		if d.hold(now, growth < d.minGrowth/2) {
			d.reported, d.since = false, -1
		}
		return leak{}, false
	}
	if !d.hold(now, rising >= leakConcordance && growth >= d.minGrowth) {
		return leak{}, false
	}
	d.reported, d.since = true, -1
	return leak{Rate: rate, Left: d.left(s.Usage, rate), Usage: s.Usage, Ceiling: d.limit}, true
}

// hold tells whether cond has held for two parts of the window up to now.
func (d *leakDetector) hold(now time.Duration, cond bool) bool {
	if !cond {
		d.since = -1
		return false
	}
	if d.since < 0 {
		d.since = now
	}
	return now-d.since >= d.window/leakParts*leakHoldParts
}

// trend is the slope of the lower envelope of the samples in [from, to], in
// bytes per second, and the share of its pairs that rise. ok is false when a
// part of the window has no sample (sampling stalled, or the window is too
// short for the sampling interval) and there is nothing to judge.
func (d *leakDetector) trend(from, to time.Duration) (rate, rising float64, ok bool) {
	part := (to - from) / leakParts
	last := -1 // the last part with a sample
	for _, s := range d.samples {
		p := min(int((s.at-from)/part), leakParts-1)
		switch {
		case p == last+1:
			d.env[p] = s
			last = p
		case p > last:
			return 0, 0, false // a part with no sample
		case s.usage < d.env[p].usage:
			d.env[p] = s
		}
	}
	if last != leakParts-1 {
		return 0, 0, false
	}
	n, up := 0, 0
	for i := range leakParts {
		for j := i + 1; j < leakParts; j++ {
			a, b := d.env[i], d.env[j]
			d.slopes[n] = (float64(b.usage) - float64(a.usage)) / (b.at - a.at).Seconds()
			if b.usage > a.usage {
				up++
			}
			n++
		}
	}
	slices.Sort(d.slopes[:])
	rate = (d.slopes[n/2-1] + d.slopes[n/2]) / 2
	return rate, float64(up) / float64(n), true
}

// left is how long until usage reaches the ceiling at rate. rate is at
// least minGrowth per window and minGrowth at least 1% of the ceiling, so
// this is at most 100 windows: no overflow.
func (d *leakDetector) left(usage uint64, rate float64) time.Duration {
	if d.limit == 0 || usage >= d.limit {
		return 0
	}
	return time.Duration(float64(d.limit-usage) / rate * float64(time.Second))
}

// String is the human sentence: "grows 12 MiB/min; reaches the 512 MiB
// ceiling in ~23 min".
func (l leak) String() string {
	s := "grows " + leakRateString(l.Rate)
	switch {
	case l.Ceiling == 0:
	case l.Left <= 0:
		s += "; already at the " + cgroup.FormatSize(l.Ceiling) + " ceiling"
	default:
		s += "; reaches the " + cgroup.FormatSize(l.Ceiling) + " ceiling in ~" + leakLeftString(l.Left)
	}
	return s
}

// leakRateString is a growth rate per minute, or per hour when less than
// 1 MiB a minute, where per-minute figures would be KiB nobody pictures.
func leakRateString(perSecond float64) string {
	if m := perSecond * 60; m >= 1<<20 {
		return cgroup.FormatSize(uint64(math.Round(m))) + "/min"
	}
	return cgroup.FormatSize(uint64(math.Round(perSecond*3600))) + "/h"
}

// leakLeftString rounds a forecast to what it is worth: whole seconds under
// 90 s, whole minutes under 90 min, then hours (one decimal under 10 h).
func leakLeftString(d time.Duration) string {
	switch {
	case d < 90*time.Second:
		return strconv.Itoa(int(math.Round(d.Seconds()))) + " s"
	case d < 90*time.Minute:
		return strconv.Itoa(int(math.Round(d.Minutes()))) + " min"
	case d < 10*time.Hour:
		return strings.TrimSuffix(strconv.FormatFloat(d.Hours(), 'f', 1, 64), ".0") + " h"
	}
	return strconv.Itoa(int(math.Round(d.Hours()))) + " h"
}
