package observe

import (
	"bytes"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The golden texts below are what client_golang v1.25's registry and
// expfmt.MetricFamilyToText wrote for these States, kept to show that
// writing the format by hand changed no byte of it: the escaping of a
// quote, a backslash and a newline in a label value, an invalid byte
// replaced, labels sorted by name, families sorted by name, unset
// families absent and the floats' form.

// goldenEscapes is metricsState with a run name and a cgroup that need
// escaping and replacing.
func goldenEscapes() State {
	s := metricsState()
	s.Run = "we\"b\\x\ny"
	s.Cgroup = "/a\xff"
	return s
}

const goldenEscapesText = `# HELP guardrun_child_start_time_seconds Start time of the current child process, in seconds since the Unix epoch; absent between children.
# TYPE guardrun_child_start_time_seconds gauge
guardrun_child_start_time_seconds{run="we\"b\\x\ny"} 1.70000000025e+09
# HELP guardrun_heap_ooms_total Processes of the command that died of their runtime's heap limit (V8's JavaScript heap out of memory) before the cgroup's ceiling.
# TYPE guardrun_heap_ooms_total counter
guardrun_heap_ooms_total{run="we\"b\\x\ny"} 6
# HELP guardrun_info Constant 1, labelled with the run's cgroup backend, the current child's group and the run's phase.
# TYPE guardrun_info gauge
guardrun_info{backend="v2",cgroup="/a�",phase="running",run="we\"b\\x\ny"} 1
# HELP guardrun_memory_cache_bytes Page cache charged to the command's cgroup at the last sample, shmem and tmpfs included (memory.stat file or total_cache).
# TYPE guardrun_memory_cache_bytes gauge
guardrun_memory_cache_bytes{run="we\"b\\x\ny"} 4.194304e+06
# HELP guardrun_memory_current_bytes Memory charged to the command's cgroup at the last sample (memory.current or memory.usage_in_bytes).
# TYPE guardrun_memory_current_bytes gauge
guardrun_memory_current_bytes{run="we\"b\\x\ny"} 1.2582912e+07
# HELP guardrun_memory_growth_bytes_per_second Sustained memory growth rate while a leak is suspected; 0 otherwise.
# TYPE guardrun_memory_growth_bytes_per_second gauge
guardrun_memory_growth_bytes_per_second{run="we\"b\\x\ny"} 1024.5
# HELP guardrun_memory_limit_bytes Memory ceiling set on the command's cgroup (memory.max); absent when none is set.
# TYPE guardrun_memory_limit_bytes gauge
guardrun_memory_limit_bytes{run="we\"b\\x\ny"} 6.7108864e+07
# HELP guardrun_memory_peak_bytes Highest memory charged to the command's cgroup over the whole run, across restarts.
# TYPE guardrun_memory_peak_bytes gauge
guardrun_memory_peak_bytes{run="we\"b\\x\ny"} 4.194304e+07
# HELP guardrun_memory_restart_at_bytes Memory at which guardrun restarts the command before the kernel kills it; absent when not set.
# TYPE guardrun_memory_restart_at_bytes gauge
guardrun_memory_restart_at_bytes{run="we\"b\\x\ny"} 6.0397977e+07
# HELP guardrun_memory_restarts_total Times guardrun stopped the command to restart it before its ceiling (--restart-at, --restart-on-pressure); counted in guardrun_restarts_total as well.
# TYPE guardrun_memory_restarts_total counter
guardrun_memory_restarts_total{run="we\"b\\x\ny"} 1
# HELP guardrun_memory_working_set_bytes Working set of the command's cgroup at the last sample: memory charged less the page cache that is not shmem, which the kernel reclaims before it OOM-kills.
# TYPE guardrun_memory_working_set_bytes gauge
guardrun_memory_working_set_bytes{run="we\"b\\x\ny"} 9.437184e+06
# HELP guardrun_oom_kills_total Processes of the command killed by the kernel's OOM killer in its cgroup (memory.events oom_kill).
# TYPE guardrun_oom_kills_total counter
guardrun_oom_kills_total{run="we\"b\\x\ny"} 2
# HELP guardrun_pressure_stalls_total Episodes of memory pressure stalls in the command's cgroup that fired the PSI trigger set on memory.pressure.
# TYPE guardrun_pressure_stalls_total counter
guardrun_pressure_stalls_total{run="we\"b\\x\ny"} 7
# HELP guardrun_restarts_total Times guardrun restarted the command.
# TYPE guardrun_restarts_total counter
guardrun_restarts_total{run="we\"b\\x\ny"} 3
# HELP guardrun_threshold_crossings_total Times the command's memory crossed --restart-at (a restart follows if it stays over for the grace period).
# TYPE guardrun_threshold_crossings_total counter
guardrun_threshold_crossings_total{run="we\"b\\x\ny"} 5
# HELP guardrun_up 1 while the command's child runs (phase running or stopping), 0 otherwise (starting, waiting for memory, backing off, ended).
# TYPE guardrun_up gauge
guardrun_up{run="we\"b\\x\ny"} 1
`

// goldenUnset is a run in backoff with nothing set.
func goldenUnset() State { return State{Run: "job", Phase: PhaseBackoff} }

const goldenUnsetText = `# HELP guardrun_heap_ooms_total Processes of the command that died of their runtime's heap limit (V8's JavaScript heap out of memory) before the cgroup's ceiling.
# TYPE guardrun_heap_ooms_total counter
guardrun_heap_ooms_total{run="job"} 0
# HELP guardrun_info Constant 1, labelled with the run's cgroup backend, the current child's group and the run's phase.
# TYPE guardrun_info gauge
guardrun_info{backend="",cgroup="",phase="backoff",run="job"} 1
# HELP guardrun_memory_cache_bytes Page cache charged to the command's cgroup at the last sample, shmem and tmpfs included (memory.stat file or total_cache).
# TYPE guardrun_memory_cache_bytes gauge
guardrun_memory_cache_bytes{run="job"} 0
# HELP guardrun_memory_current_bytes Memory charged to the command's cgroup at the last sample (memory.current or memory.usage_in_bytes).
# TYPE guardrun_memory_current_bytes gauge
guardrun_memory_current_bytes{run="job"} 0
# HELP guardrun_memory_growth_bytes_per_second Sustained memory growth rate while a leak is suspected; 0 otherwise.
# TYPE guardrun_memory_growth_bytes_per_second gauge
guardrun_memory_growth_bytes_per_second{run="job"} 0
# HELP guardrun_memory_peak_bytes Highest memory charged to the command's cgroup over the whole run, across restarts.
# TYPE guardrun_memory_peak_bytes gauge
guardrun_memory_peak_bytes{run="job"} 0
# HELP guardrun_memory_restarts_total Times guardrun stopped the command to restart it before its ceiling (--restart-at, --restart-on-pressure); counted in guardrun_restarts_total as well.
# TYPE guardrun_memory_restarts_total counter
guardrun_memory_restarts_total{run="job"} 0
# HELP guardrun_memory_working_set_bytes Working set of the command's cgroup at the last sample: memory charged less the page cache that is not shmem, which the kernel reclaims before it OOM-kills.
# TYPE guardrun_memory_working_set_bytes gauge
guardrun_memory_working_set_bytes{run="job"} 0
# HELP guardrun_oom_kills_total Processes of the command killed by the kernel's OOM killer in its cgroup (memory.events oom_kill).
# TYPE guardrun_oom_kills_total counter
guardrun_oom_kills_total{run="job"} 0
# HELP guardrun_pressure_stalls_total Episodes of memory pressure stalls in the command's cgroup that fired the PSI trigger set on memory.pressure.
# TYPE guardrun_pressure_stalls_total counter
guardrun_pressure_stalls_total{run="job"} 0
# HELP guardrun_restarts_total Times guardrun restarted the command.
# TYPE guardrun_restarts_total counter
guardrun_restarts_total{run="job"} 0
# HELP guardrun_threshold_crossings_total Times the command's memory crossed --restart-at (a restart follows if it stays over for the grace period).
# TYPE guardrun_threshold_crossings_total counter
guardrun_threshold_crossings_total{run="job"} 0
# HELP guardrun_up 1 while the command's child runs (phase running or stopping), 0 otherwise (starting, waiting for memory, backing off, ended).
# TYPE guardrun_up gauge
guardrun_up{run="job"} 0
`

// processWant is the process_* families /metrics carries and their help,
// as client_golang's process collector named them on Linux (less
// process_network_*, which counted the namespace, not the process).
var processWant = map[string]struct {
	typ  dto.MetricType
	help string
}{
	"process_cpu_seconds_total":        {dto.MetricType_COUNTER, "Total user and system CPU time spent in seconds."},
	"process_open_fds":                 {dto.MetricType_GAUGE, "Number of open file descriptors."},
	"process_max_fds":                  {dto.MetricType_GAUGE, "Maximum number of open file descriptors."},
	"process_virtual_memory_bytes":     {dto.MetricType_GAUGE, "Virtual memory size in bytes."},
	"process_virtual_memory_max_bytes": {dto.MetricType_GAUGE, "Maximum amount of virtual memory available in bytes."},
	"process_resident_memory_bytes":    {dto.MetricType_GAUGE, "Resident memory size in bytes."},
	"process_start_time_seconds":       {dto.MetricType_GAUGE, "Start time of the process since unix epoch in seconds."},
}

func TestTextfileGolden(t *testing.T) {
	for name, c := range map[string]struct {
		snap func() State
		want string
	}{
		"escapes": {goldenEscapes, goldenEscapesText},
		"unset":   {goldenUnset, goldenUnsetText},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "guardrun.prom")
			if err := NewMetrics(c.snap).WriteTextfile(path); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != c.want {
				t.Errorf("textfile:\n%s\nwant:\n%s", b, c.want)
			}
		})
	}
}

// TestMetricsGolden: /metrics is the textfile and then the process_*
// families, which sort after guardrun_*.
func TestMetricsGolden(t *testing.T) {
	rec := httptest.NewRecorder()
	NewMetrics(goldenEscapes).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	body := rec.Body.String()
	run, proc, ok := strings.Cut(body, "# HELP process_")
	if !ok || run != goldenEscapesText {
		t.Errorf("/metrics before process_*:\n%s\nwant:\n%s", run, goldenEscapesText)
	}
	if strings.Contains(proc, "guardrun_") {
		t.Errorf("guardrun_* after process_*:\n%s", body)
	}
}

// TestExpositionParses parses the whole of /metrics and of the textfile
// with Prometheus's own parser and checks every family in them: the run's
// (checkRunMetrics) and guardrun's process_*, and nothing else.
func TestExpositionParses(t *testing.T) {
	srv := httptest.NewServer(NewMetrics(metricsState).Handler())
	defer srv.Close()
	before := time.Now()
	mfs := scrapeMetrics(t, srv.URL+"/metrics")
	checkRunMetrics(t, mfs)
	for name, mf := range mfs {
		if strings.HasPrefix(name, "guardrun_") {
			continue
		}
		w, ok := processWant[name]
		if !ok {
			t.Errorf("/metrics has %s", name)
			continue
		}
		if mf.GetType() != w.typ || mf.GetHelp() != w.help || len(mf.Metric) != 1 || len(mf.Metric[0].Label) != 0 {
			t.Errorf("%s: %v", name, mf)
		}
	}
	v := func(name string) float64 {
		mf := mfs[name]
		if mf == nil {
			t.Errorf("%s missing", name)
			return math.NaN()
		}
		return sampleValue(mf.Metric[0])
	}
	// This test binary is the process: its figures can be checked.
	if fds := v("process_open_fds"); !(fds >= 3 && fds <= v("process_max_fds")) {
		t.Errorf("process_open_fds %v, process_max_fds %v", fds, v("process_max_fds"))
	}
	if rss, vsz := v("process_resident_memory_bytes"), v("process_virtual_memory_bytes"); !(rss > 1<<20 && vsz >= rss && v("process_virtual_memory_max_bytes") >= vsz) {
		t.Errorf("rss %v, virtual %v, virtual max %v", rss, vsz, v("process_virtual_memory_max_bytes"))
	}
	// Start time has the kernel's tick (10 ms) and btime is whole seconds.
	if st := v("process_start_time_seconds"); !(st > float64(before.Add(-time.Hour).Unix()) && st < float64(before.Unix()+2)) {
		t.Errorf("process_start_time_seconds %v, now %v", st, before.Unix())
	}
	if cpu := v("process_cpu_seconds_total"); !(cpu >= 0 && cpu < 3600) {
		t.Errorf("process_cpu_seconds_total %v", cpu)
	}

	path := filepath.Join(t.TempDir(), "guardrun.prom")
	if err := NewMetrics(metricsState).WriteTextfile(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tf := parseMetrics(t, f)
	checkRunMetrics(t, tf)
	if len(tf) != len(metricsWant) {
		t.Errorf("textfile has %d families, want the %d guardrun_* ones", len(tf), len(metricsWant))
	}
}

// TestMetricsProcessUnreadable: when guardrun's own figures cannot be
// read, the run's are served all the same.
func TestMetricsProcessUnreadable(t *testing.T) {
	m := NewMetrics(metricsState)
	// Beyond PID_MAX_LIMIT (2^22): no such process, so /proc/PID and
	// prlimit(2) both fail, as a /proc that is not mounted would.
	m.pid = 1 << 30
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	mfs := scrapeMetrics(t, srv.URL+"/metrics")
	checkRunMetrics(t, mfs)
	for name := range mfs {
		if !strings.HasPrefix(name, "guardrun_") {
			t.Errorf("%s exported for a process that cannot be read", name)
		}
	}
}

// TestMetricsBoundsScrapes: a fifth scrape while four are in flight is
// turned away at once rather than queued.
func TestMetricsBoundsScrapes(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	srv := httptest.NewServer(NewMetrics(func() State {
		entered <- struct{}{}
		<-release
		return metricsState()
	}).Handler())
	defer srv.Close()

	var wg sync.WaitGroup
	codes := make(chan int, maxScrapesInFlight)
	for range maxScrapesInFlight {
		wg.Go(func() {
			resp, err := http.Get(srv.URL + "/metrics")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
		<-entered
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("scrape beyond %d in flight: %s, want 503", maxScrapesInFlight, resp.Status)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("scrape in flight: %d, want 200", c)
		}
	}
	// The slots are given back.
	go func() { <-entered }()
	mfs := scrapeMetrics(t, srv.URL+"/metrics")
	checkRunMetrics(t, mfs)
}

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {math.Copysign(0, -1), "0"}, {1, "1"}, {-1, "-1"}, {1024.5, "1024.5"},
		{12 << 20, "1.2582912e+07"}, {60397977, "6.0397977e+07"}, {1700000000.25, "1.70000000025e+09"},
		{math.MaxUint64, "1.8446744073709552e+19"}, {math.Inf(1), "+Inf"}, {math.Inf(-1), "-Inf"}, {math.NaN(), "NaN"},
	} {
		if got := formatValue(c.v); got != c.want {
			t.Errorf("formatValue(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}

func TestWriteTextEscapes(t *testing.T) {
	var buf bytes.Buffer
	writeText(&buf, []family{
		{name: "b", help: "back\\slash and\nnewline, \"quotes\" kept", typ: gauge,
			samples: []sample{{labels: []labelPair{{"z", "1"}, {"a", "q\"b\\n\n"}}, value: 2}}},
		{name: "a", help: "empty", typ: counter},
	})
	want := "# HELP b back\\\\slash and\\nnewline, \"quotes\" kept\n# TYPE b gauge\n" + `b{a="q\"b\\n\n",z="1"} 2` + "\n"
	if buf.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}
