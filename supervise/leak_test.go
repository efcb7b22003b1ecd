package supervise

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leakEpoch is where replayed profiles and synthetic series start; any fixed
// time will do, the detector only takes differences.
var leakEpoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// loadProfile reads a profile recorded by scripts/record-profile:
// # comment lines, a header, then one sample a line. The header is
// "seconds,bytes" for a process's VmRSS, which has no page cache to take
// out: its working set is its bytes. A group's recording has a third
// column, "seconds,bytes,working_set": bytes is the group's usage, page
// cache included, and working_set the usage less the page cache that is
// not shmem (cgroup.WorkingSet).
func loadProfile(t testing.TB, name string) []Sample {
	t.Helper()
	path := filepath.Join("..", "testdata", "profiles", name+".csv")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var samples []Sample
	header := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case header == "":
			if line != "seconds,bytes" && line != "seconds,bytes,working_set" {
				t.Fatalf("%s:%d: header %q, want seconds,bytes or seconds,bytes,working_set", path, n, line)
			}
			header = line
			continue
		}
		fields := strings.Split(line, ",")
		if len(fields) != strings.Count(header, ",")+1 {
			t.Fatalf("%s:%d: %q is not %s", path, n, line, header)
		}
		s, err1 := strconv.ParseFloat(fields[0], 64)
		b, err2 := strconv.ParseUint(fields[1], 10, 64)
		ws, err3 := b, error(nil)
		if len(fields) == 3 {
			ws, err3 = strconv.ParseUint(fields[2], 10, 64)
		}
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("%s:%d: %q is not %s", path, n, line, header)
		}
		if ws > b {
			t.Fatalf("%s:%d: working set %d above usage %d", path, n, ws, b)
		}
		samples = append(samples, Sample{Time: leakEpoch.Add(time.Duration(s * float64(time.Second))), Usage: b, WorkingSet: ws})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(samples) < 100 {
		t.Fatalf("%s: %d samples, want a recording", path, len(samples))
	}
	return samples
}

// workingSet is a profile as the supervisor feeds it to the detector: the
// working set, which page cache a service fills and the kernel drops at the
// ceiling does not move. rawUsage is the group's whole usage, as it was fed
// before. Each puts the figure in both fields, so that a replay judges the
// one it names whichever field the detector reads.
func workingSet(samples []Sample) []Sample {
	out := make([]Sample, len(samples))
	for i, s := range samples {
		out[i] = Sample{Time: s.Time, Usage: s.WorkingSet, WorkingSet: s.WorkingSet}
	}
	return out
}

func rawUsage(samples []Sample) []Sample {
	out := make([]Sample, len(samples))
	for i, s := range samples {
		out[i] = Sample{Time: s.Time, Usage: s.Usage, WorkingSet: s.Usage}
	}
	return out
}

// leakFound is a leak the detector reported, and when.
type leakFound struct {
	at time.Duration // since the first sample
	leak
}

func (f leakFound) String() string { return f.at.String() + ": " + f.leak.String() }

func replayLeaks(d *leakDetector, samples []Sample) []leakFound {
	var out []leakFound
	for _, s := range samples {
		if l, ok := d.add(s); ok {
			out = append(out, leakFound{s.Time.Sub(samples[0].Time), l})
		}
	}
	return out
}

// baselineSlope is the growth of a recording from the end of the warm-up to
// its end, measured on the lowest sample of the first and the last 10 s so
// that a saw-tooth's phase does not move it: the true slope a detected rate
// is held to.
func baselineSlope(samples []Sample, warmup time.Duration) float64 {
	from, end := samples[0].Time.Add(warmup), samples[len(samples)-1].Time
	var a, b *Sample
	for i := range samples {
		s := &samples[i]
		if !s.Time.Before(from) && s.Time.Before(from.Add(10*time.Second)) && (a == nil || s.Usage < a.Usage) {
			a = s
		}
		if s.Time.After(end.Add(-10*time.Second)) && (b == nil || s.Usage < b.Usage) {
			b = s
		}
	}
	return (float64(b.Usage) - float64(a.Usage)) / b.Time.Sub(a.Time).Seconds()
}

// TestLeakProfiles replays the recorded profiles' working set, as the
// supervisor feeds it (for these VmRSS recordings, their bytes; filecache
// has TestLeakPageCache). The windows span the saw-tooth's GC cycles often
// enough (see leak.go), and leave the leaks' recordings room for a
// judgement or two after the warm-up. The rate is
// held to the recording's own growth at 45 s, the window that suits both
// leaks: at 30 s the leak under GC measures its troughs' wander as much as
// its growth (+51%), and at 60 s the cache's growth has slowed for the last
// window (-32%).
func TestLeakProfiles(t *testing.T) {
	const ceiling = 1 << 30
	s := time.Second
	for _, tc := range []struct {
		profile string
		leaks   bool
		windows []time.Duration
	}{
		{"leak", true, []time.Duration{30 * s, 45 * s, 60 * s}},
		{"sawtooth-leak", true, []time.Duration{30 * s, 45 * s, 60 * s}},
		{"flat", false, []time.Duration{20 * s, 30 * s, 45 * s, 60 * s}},
		{"sawtooth", false, []time.Duration{20 * s, 30 * s, 45 * s, 60 * s}},
		{"startup", false, []time.Duration{20 * s, 30 * s, 45 * s, 60 * s}},
	} {
		samples := workingSet(loadProfile(t, tc.profile))
		for _, window := range tc.windows {
			for _, limit := range []uint64{0, ceiling} {
				name := fmt.Sprintf("%s/%v/limit=%dMiB", tc.profile, window, limit>>20)
				t.Run(name, func(t *testing.T) {
					d := newLeakDetector(window, limit)
					got := replayLeaks(d, samples)
					if !tc.leaks {
						for _, f := range got {
							t.Errorf("reported %v (%.0f KiB/s), want no leak", f, f.Rate/1024)
						}
						return
					}
					if len(got) != 1 {
						t.Fatalf("reported %v, want one leak", got)
					}
					f := got[0]
					t.Logf("%v (%.2f MiB/s)", f, f.Rate/(1<<20))
					if at := samples[0].Time.Add(f.at); f.Usage != usageAtTime(samples, at) {
						t.Errorf("usage %d, the sample at %v had %d", f.Usage, f.at, usageAtTime(samples, at))
					}
					if limit == 0 && (f.Left != 0 || f.Ceiling != 0) {
						t.Errorf("left %v of limit %d, want 0 without a ceiling", f.Left, f.Ceiling)
					}
					if window != 45*time.Second {
						return
					}
					truth := baselineSlope(samples, d.warmup)
					if r := f.Rate / truth; r < 0.7 || r > 1.3 {
						t.Errorf("rate %.2f MiB/s, the recording grew %.2f MiB/s end to end: off by more than 30%%", f.Rate/(1<<20), truth/(1<<20))
					}
					if limit == 0 {
						return
					}
					// What the recording's own growth says is left.
					want := time.Duration(float64(limit-f.Usage) / truth * float64(time.Second))
					if r := float64(f.Left) / float64(want); r < 0.7 || r > 1.3 {
						t.Errorf("left %v, at the recording's growth %v", f.Left, want.Round(time.Second))
					}
				})
			}
		}
	}
}

// TestLeakPageCache is why the forecast judges the working set. The
// recorded static-file server's usage grows by the page cache of the files
// it is handed, 2 MiB/s of uploads for the whole recording, and a forecast
// on usage takes that for a leak at every window, at the cache's rate. At
// the ceiling the kernel would drop that cache, not OOM-kill the server: a
// warning, or a restart, for it would be for nothing. Its working set is
// not reported under a 1 GiB ceiling, at windows from 20 s to 60 s.
//
// Without a ceiling it is: the working set is not quite flat. It creeps by
// 75-550 KiB/s in bursts, under a quarter of the cache's growth (the
// profile's header: from 10 s to the end, anon +4 MiB as V8 settles,
// kernel memory +10 MiB). The kernel memory comes with the cache, and v1
// charges it to the group: xarray nodes, ext4's buffer heads, inodes and
// dentries, about 3% of the cache (300 MiB of files written by the files
// test child: 8.6 MiB of memory.kmem.usage_in_bytes, all of its working
// set). The kernel reclaims it with the cache (at a 64 MiB ceiling it fell
// to 1.7 MiB), but memory.stat does not count it as cache, so the working
// set keeps it. A ceiling's least growth, 1% of it a window, hides the
// creep; without one the least is 1 MiB a window, which it passes. Those
// cases may report the creep, at its own rate, but never the cache's:
// under half of what the raw usage is reported at.
func TestLeakPageCache(t *testing.T) {
	const ceiling = 1 << 30
	samples := loadProfile(t, "filecache")
	last := samples[len(samples)-1]
	if cache := last.Usage - last.WorkingSet; cache < 256<<20 {
		t.Fatalf("the profile ends with %d MiB of page cache: it no longer shows what page cache does to usage", cache>>20)
	}
	ws, usage := workingSet(samples), rawUsage(samples)
	s := time.Second
	for _, window := range []time.Duration{20 * s, 30 * s, 45 * s, 60 * s} {
		for _, limit := range []uint64{0, ceiling} {
			t.Run(fmt.Sprintf("working_set/%v/limit=%dMiB", window, limit>>20), func(t *testing.T) {
				got := replayLeaks(newLeakDetector(window, limit), ws)
				creep := limit == 0
				cacheRate := baselineSlope(usage, newLeakDetector(window, limit).warmup)
				for _, f := range got {
					if !creep || f.Rate >= cacheRate/2 {
						t.Errorf("reported %v (%.0f KiB/s; the cache grows %.0f KiB/s), want no leak", f, f.Rate/1024, cacheRate/1024)
					}
				}
				if creep && len(got) > 0 {
					t.Logf("reported %v: without a ceiling, the working set's creep of kernel memory (see TestLeakPageCache)", got)
				}
			})
			t.Run(fmt.Sprintf("usage/%v/limit=%dMiB", window, limit>>20), func(t *testing.T) {
				d := newLeakDetector(window, limit)
				got := replayLeaks(d, usage)
				if len(got) == 0 {
					t.Fatal("usage with page cache not reported: the profile no longer shows why the working set matters")
				}
				f := got[0]
				t.Logf("%v (%.2f MiB/s)", f, f.Rate/(1<<20))
				truth := baselineSlope(usage, d.warmup)
				if r := f.Rate / truth; r < 0.7 || r > 1.3 {
					t.Errorf("rate %.2f MiB/s, the recording's usage grew %.2f MiB/s end to end: off by more than 30%%", f.Rate/(1<<20), truth/(1<<20))
				}
			})
		}
	}
}

func usageAtTime(samples []Sample, at time.Time) uint64 {
	for _, s := range samples {
		if s.Time.Equal(at) {
			return s.Usage
		}
	}
	return 0
}

// TestLeakStartupRamp: the start-up profile's load ramps for ~15 s, which a
// 15 s window, judged from the first sample, takes for a leak; the warm-up
// is what keeps it from being reported.
func TestLeakStartupRamp(t *testing.T) {
	samples := loadProfile(t, "startup")
	if got := replayLeaks(newLeakDetector(15*time.Second, 0), samples); len(got) != 0 {
		t.Errorf("reported %v, want the start-up ramp ignored", got)
	}
	d := newLeakDetector(15*time.Second, 0)
	d.warmup = 0
	if got := replayLeaks(d, samples); len(got) == 0 {
		t.Error("without a warm-up the start-up ramp is not reported either: the profile no longer tests the warm-up")
	}
}

// leakSeries is a synthetic usage, one sample a second from leakEpoch.
func leakSeries(seconds int, usage func(sec int) uint64) []Sample {
	s := make([]Sample, seconds)
	for i := range s {
		s[i] = Sample{Time: leakEpoch.Add(time.Duration(i) * time.Second), Usage: usage(i)}
	}
	return s
}

// TestLeakExactRamp: a ramp of exactly 1 MiB/s. The warm-up is 30 s, the
// first full window ends at 90 s, and the growth must hold for two parts
// (15 s): the report comes at 105 s, with the exact rate, and the ceiling
// 819 s away.
func TestLeakExactRamp(t *testing.T) {
	const mib = 1 << 20
	samples := leakSeries(300, func(sec int) uint64 { return 100*mib + uint64(sec)*mib })
	got := replayLeaks(newLeakDetector(60*time.Second, 1024*mib), samples)
	want := leakFound{105 * time.Second, leak{Rate: mib, Left: 819 * time.Second, Usage: 205 * mib, Ceiling: 1024 * mib}}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("got %+v, want [%+v]", got, want)
	}
	// A sample that does not move time on, as a clock step could give,
	// is left out and changes nothing.
	twice := make([]Sample, 0, 2*len(samples))
	for _, s := range samples {
		twice = append(twice, s, s)
	}
	if got := replayLeaks(newLeakDetector(60*time.Second, 1024*mib), twice); len(got) != 1 || got[0] != want {
		t.Fatalf("each sample twice: got %+v, want [%+v]", got, want)
	}
}

// TestLeakOnce: a leak is reported once while it lasts, even as it slows;
// again only after a flat stretch and growth that resumes.
func TestLeakOnce(t *testing.T) {
	const mib = 1 << 20
	samples := leakSeries(1200, func(sec int) uint64 {
		switch {
		case sec < 300:
			return 100*mib + uint64(sec)*mib
		case sec < 500: // slower, still growing
			return 400*mib + uint64(sec-300)*mib/4
		case sec < 800: // flat
			return 450 * mib
		default: // and again
			return 450*mib + uint64(sec-800)*mib/2
		}
	})
	got := replayLeaks(newLeakDetector(60*time.Second, 0), samples)
	if len(got) != 2 || got[0].at != 105*time.Second || got[1].at < 800*time.Second {
		t.Fatalf("reported %v, want at 105s and once more after 800s", got)
	}
	if got[1].Rate != mib/2 {
		t.Errorf("second rate %.0f B/s, want %d", got[1].Rate, mib/2)
	}
}

// TestLeakSparse: a window too short for the sampling interval leaves
// parts without a sample, and there is nothing to judge.
func TestLeakSparse(t *testing.T) {
	const mib = 1 << 20
	var samples []Sample
	for sec := 0; sec < 1200; sec += 10 {
		samples = append(samples, Sample{Time: leakEpoch.Add(time.Duration(sec) * time.Second), Usage: uint64(sec) * mib})
	}
	if got := replayLeaks(newLeakDetector(60*time.Second, 0), samples); len(got) != 0 {
		t.Fatalf("reported %v with a sample every 10 s in a 60 s window", got)
	}
}

func TestLeakString(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		l    leak
		want string
	}{
		{leak{Rate: 12 * mib / 60.0, Left: 23 * time.Minute, Ceiling: 512 * mib}, "grows 12 MiB/min; reaches the 512 MiB ceiling in ~23 min"},
		{leak{Rate: 12 * mib / 60.0}, "grows 12 MiB/min"},
		{leak{Rate: 2.5 * mib / 60, Left: 89 * time.Second, Ceiling: 512 * mib}, "grows 2.5 MiB/min; reaches the 512 MiB ceiling in ~89 s"},
		{leak{Rate: 100 * mib, Left: 4 * time.Second, Ceiling: 2 << 30}, "grows 5.9 GiB/min; reaches the 2 GiB ceiling in ~4 s"},
		// Under 1 MiB a minute, per hour.
		{leak{Rate: 30 * mib / 3600.0, Left: 5*time.Hour + 20*time.Minute, Ceiling: 1 << 30}, "grows 30 MiB/h; reaches the 1 GiB ceiling in ~5.3 h"},
		{leak{Rate: 300 * 1024 / 3600.0, Left: 30 * time.Hour, Ceiling: 256 * mib}, "grows 300 KiB/h; reaches the 256 MiB ceiling in ~30 h"},
		{leak{Rate: mib, Left: 0, Usage: 512 * mib, Ceiling: 512 * mib}, "grows 60 MiB/min; already at the 512 MiB ceiling"},
	} {
		if got := tc.l.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.l, got, tc.want)
		}
	}
}

// BenchmarkLeakDetectorAdd is the per-sample cost at the scale guardrun
// runs it: a 10 min window sampled every second, 600 samples, judged on
// every add.
func BenchmarkLeakDetectorAdd(b *testing.B) {
	const mib = 1 << 20
	usage := func(sec int) uint64 { return 200*mib + uint64(sec)*1024 + uint64(sec%7)*3*mib }
	d := newLeakDetector(10*time.Minute, 1<<30)
	sec := 0
	for ; sec < 1200; sec++ {
		d.add(Sample{Time: leakEpoch.Add(time.Duration(sec) * time.Second), Usage: usage(sec)})
	}
	b.ReportAllocs()
	for b.Loop() {
		d.add(Sample{Time: leakEpoch.Add(time.Duration(sec) * time.Second), Usage: usage(sec)})
		sec++
	}
}
