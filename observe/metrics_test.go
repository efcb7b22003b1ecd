package observe

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var metricsChildStart = time.Unix(1700000000, 250_000_000)

func metricsState() State {
	return State{
		Run: "web", Phase: PhaseRunning, Backend: "v2", Cgroup: "/sys/fs/cgroup/guardrun/web-1",
		Ceiling: 64 << 20, RestartAt: 60397977, Current: 12 << 20, WorkingSet: 9 << 20, Cache: 4 << 20, Peak: 40 << 20,
		Restarts: 3, OOMKills: 2, HeapOOMs: 6, MemoryRestarts: 1, Crossings: 5, PressureStalls: 7, LeakRate: 1024.5,
		Pid: 4242, Started: metricsChildStart.Add(-time.Hour), ChildStarted: metricsChildStart,
	}
}

type wantSample struct {
	name  string
	typ   dto.MetricType
	value float64
}

// metricsWant is what metricsState must export; guardrun_info is checked
// apart for its labels.
var metricsWant = []wantSample{
	{"guardrun_up", dto.MetricType_GAUGE, 1},
	{"guardrun_memory_current_bytes", dto.MetricType_GAUGE, 12 << 20},
	{"guardrun_memory_working_set_bytes", dto.MetricType_GAUGE, 9 << 20},
	{"guardrun_memory_cache_bytes", dto.MetricType_GAUGE, 4 << 20},
	{"guardrun_memory_peak_bytes", dto.MetricType_GAUGE, 40 << 20},
	{"guardrun_memory_limit_bytes", dto.MetricType_GAUGE, 64 << 20},
	{"guardrun_memory_restart_at_bytes", dto.MetricType_GAUGE, 60397977},
	{"guardrun_oom_kills_total", dto.MetricType_COUNTER, 2},
	{"guardrun_heap_ooms_total", dto.MetricType_COUNTER, 6},
	{"guardrun_restarts_total", dto.MetricType_COUNTER, 3},
	{"guardrun_memory_restarts_total", dto.MetricType_COUNTER, 1},
	{"guardrun_threshold_crossings_total", dto.MetricType_COUNTER, 5},
	{"guardrun_pressure_stalls_total", dto.MetricType_COUNTER, 7},
	{"guardrun_memory_growth_bytes_per_second", dto.MetricType_GAUGE, 1024.5},
	{"guardrun_child_start_time_seconds", dto.MetricType_GAUGE, 1700000000.25},
	{"guardrun_info", dto.MetricType_GAUGE, 1},
}

func parseMetrics(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	// The zero TextParser is invalid since common v0.63: the validation
	// scheme must be named. Our names are legacy ones, which UTF-8
	// validation accepts as well.
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return mfs
}

func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: Content-Type %q, want the text format", url, ct)
	}
	return parseMetrics(t, resp.Body)
}

func metricLabels(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func sampleValue(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

// checkRunMetrics asserts every guardrun_* family of metricsState: its type, its
// one sample's value and its labels, and that there is nothing else.
func checkRunMetrics(t *testing.T, mfs map[string]*dto.MetricFamily) {
	t.Helper()
	for _, w := range metricsWant {
		mf := mfs[w.name]
		if mf == nil {
			t.Errorf("%s: missing", w.name)
			continue
		}
		if mf.GetType() != w.typ {
			t.Errorf("%s: type %v, want %v", w.name, mf.GetType(), w.typ)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s: no HELP", w.name)
		}
		if len(mf.Metric) != 1 {
			t.Errorf("%s: %d samples, want 1", w.name, len(mf.Metric))
			continue
		}
		m := mf.Metric[0]
		if v := sampleValue(m); v != w.value {
			t.Errorf("%s = %v, want %v", w.name, v, w.value)
		}
		l := metricLabels(m)
		if l["run"] != "web" {
			t.Errorf("%s: labels %v, want run=\"web\"", w.name, l)
		}
		if w.name == "guardrun_info" {
			want := map[string]string{"run": "web", "backend": "v2", "cgroup": "/sys/fs/cgroup/guardrun/web-1", "phase": "running"}
			if len(l) != len(want) {
				t.Errorf("guardrun_info labels %v, want %v", l, want)
			}
			for k, v := range want {
				if l[k] != v {
					t.Errorf("guardrun_info labels %v, want %v", l, want)
					break
				}
			}
		} else if len(l) != 1 {
			t.Errorf("%s: labels %v, want only run", w.name, l)
		}
	}
	n := 0
	for name := range mfs {
		if strings.HasPrefix(name, "guardrun_") {
			n++
		}
	}
	if n != len(metricsWant) {
		t.Errorf("%d guardrun_* families, want %d", n, len(metricsWant))
	}
}

func TestMetricsHandler(t *testing.T) {
	srv := httptest.NewServer(NewMetrics(metricsState).Handler())
	defer srv.Close()
	mfs := scrapeMetrics(t, srv.URL+"/metrics")
	checkRunMetrics(t, mfs)
	// guardrun's own footprint is there; the Go runtime's is not.
	if mf := mfs["process_resident_memory_bytes"]; mf == nil || sampleValue(mf.Metric[0]) <= 0 {
		t.Errorf("process_resident_memory_bytes missing or 0: %v", mf)
	}
	for name := range mfs {
		if strings.HasPrefix(name, "go_") {
			t.Errorf("%s exported; go_* are left out", name)
		}
	}
}

// TestMetricsReadsStateAtScrape checks that each scrape sees the State as
// it is then, and that what is not set is absent rather than 0.
func TestMetricsReadsStateAtScrape(t *testing.T) {
	var restarts atomic.Int64
	phase := atomic.Value{}
	phase.Store(PhaseBackoff)
	snap := func() State {
		return State{Run: "job", Phase: phase.Load().(string), Restarts: int(restarts.Load()), Peak: 1 << 20}
	}
	srv := httptest.NewServer(NewMetrics(snap).Handler())
	defer srv.Close()

	mfs := scrapeMetrics(t, srv.URL+"/metrics")
	for _, name := range []string{"guardrun_memory_limit_bytes", "guardrun_memory_restart_at_bytes", "guardrun_child_start_time_seconds"} {
		if mfs[name] != nil {
			t.Errorf("%s exported for an unset value: %v", name, mfs[name])
		}
	}
	if v := sampleValue(mfs["guardrun_up"].Metric[0]); v != 0 {
		t.Errorf("guardrun_up = %v in backoff, want 0", v)
	}
	if v := sampleValue(mfs["guardrun_memory_growth_bytes_per_second"].Metric[0]); v != 0 {
		t.Errorf("growth = %v with no leak suspected, want 0", v)
	}

	restarts.Store(4)
	phase.Store(PhaseRunning)
	mfs = scrapeMetrics(t, srv.URL+"/metrics")
	if v := sampleValue(mfs["guardrun_restarts_total"].Metric[0]); v != 4 {
		t.Errorf("guardrun_restarts_total = %v after 4 restarts", v)
	}
	if v := sampleValue(mfs["guardrun_up"].Metric[0]); v != 1 {
		t.Errorf("guardrun_up = %v while running, want 1", v)
	}
}

func TestMetricsUpByPhase(t *testing.T) {
	for phase, want := range map[string]float64{
		PhaseStarting: 0, PhaseRunning: 1, PhaseStopping: 1,
		PhaseBackoff: 0, PhaseWaiting: 0, PhaseEnded: 0, PhaseGaveUp: 0,
	} {
		rec := httptest.NewRecorder()
		NewMetrics(func() State { return State{Run: "p", Phase: phase} }).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		mf := parseMetrics(t, rec.Body)["guardrun_up"]
		if mf == nil {
			t.Errorf("phase %s: no guardrun_up", phase)
		} else if v := sampleValue(mf.Metric[0]); v != want {
			t.Errorf("phase %s: guardrun_up = %v, want %v", phase, v, want)
		}
	}
}

// TestMetricsInvalidUTF8: label values must be UTF-8 (Prometheus fails
// the whole scrape on one that is not) and a cgroup path need not be.
func TestMetricsInvalidUTF8(t *testing.T) {
	m := NewMetrics(func() State { return State{Run: "bad\xff", Cgroup: "/sys/fs/cgroup/\xfe", Phase: PhaseRunning} })
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	mfs := scrapeMetrics(t, srv.URL+"/metrics")
	if l := metricLabels(mfs["guardrun_info"].Metric[0]); l["run"] != "bad\uFFFD" || l["cgroup"] != "/sys/fs/cgroup/\uFFFD" {
		t.Errorf("guardrun_info labels %q", l)
	}
}

func TestTextfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "guardrun-web.prom")
	var peak atomic.Int64
	peak.Store(40 << 20)
	m := NewMetrics(func() State { s := metricsState(); s.Peak = uint64(peak.Load()); return s })
	if err := m.WriteTextfile(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm() != 0o644 {
		t.Fatalf("textfile mode %v, want a regular file with 0644", st.Mode())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mfs := parseMetrics(t, f)
	f.Close()
	checkRunMetrics(t, mfs)
	// Only the run's families: node_exporter has process_* of its own.
	for name := range mfs {
		if !strings.HasPrefix(name, "guardrun_") {
			t.Errorf("textfile has %s", name)
		}
	}

	// A rewrite replaces the file whole and leaves no temporary behind.
	peak.Store(50 << 20)
	if err := m.WriteTextfile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`guardrun_memory_peak_bytes{run="web"} 5.24288e+07`+"\n")) {
		t.Errorf("rewritten textfile:\n%s", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %v, want only the textfile", ents)
	}
}

// TestTextfileReplacesSymlink: a symlink planted at the textfile's path is
// replaced, not written through, so guardrun (root) cannot be made to
// overwrite the file it points to.
func TestTextfileReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "guardrun.prom")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := NewMetrics(metricsState).WriteTextfile(path); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "keep me\n" {
		t.Fatalf("symlink target now %q (%v), want it unchanged", b, err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Mode().IsRegular() {
		t.Fatalf("%s is %v after the write, want a regular file", path, st.Mode())
	}
}

func TestTextfileNeedsProm(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"guardrun.txt", "guardrun.prom.tmp", "guardrun"} {
		path := filepath.Join(dir, name)
		err := NewMetrics(metricsState).WriteTextfile(path)
		if err == nil || !strings.Contains(err.Error(), ".prom") || !strings.Contains(err.Error(), path) {
			t.Errorf("WriteTextfile(%q) = %v, want an error that names the path and .prom", path, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused writes left %v", ents)
	}
}

func TestServeRefusesRemote(t *testing.T) {
	h := NewMetrics(metricsState).Handler()
	// 192.0.2.1 (TEST-NET-1) is on no interface here: were the check made
	// after binding, the error would be "cannot assign requested address".
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:0", ":0", "[::]:0"} {
		bound, done, err := Serve(t.Context(), addr, false, h)
		if !errors.Is(err, ErrNotLoopback) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "allow remote") {
			t.Errorf("Serve(%q) = %q, %v, %v; want ErrNotLoopback naming the address and how to allow it", addr, bound, done, err)
		}
	}
}

func TestServeAllowRemote(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	bound, done, err := Serve(ctx, "0.0.0.0:0", true, NewMetrics(metricsState).Handler())
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(bound)
	checkRunMetrics(t, scrapeMetrics(t, "http://127.0.0.1:"+port+"/metrics"))
	cancel()
	waitServeDone(t, done)
}

func TestServeLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0"} {
		t.Run(addr, func(t *testing.T) {
			if addr == "[::1]:0" {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Skipf("this host has no IPv6 loopback: %v", err)
				}
				ln.Close()
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			bound, done, err := Serve(ctx, addr, false, NewMetrics(metricsState).Handler())
			if err != nil {
				t.Fatal(err)
			}
			if _, port, _ := net.SplitHostPort(bound); port == "0" {
				t.Fatalf("bound %q, want the port that was given", bound)
			}
			checkRunMetrics(t, scrapeMetrics(t, "http://"+bound+"/metrics"))
			if resp, err := http.Get("http://" + bound + "/"); err != nil || resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET / = %v, %v; want 404, only /metrics is served", resp, err)
			}

			cancel()
			waitServeDone(t, done)
			if c, err := net.DialTimeout("tcp", bound, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections after ctx was cancelled", bound)
			}
		})
	}
}

func TestServeAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	_, _, err = Serve(t.Context(), addr, false, NewMetrics(metricsState).Handler())
	// The CLI shows this error as is; testdata/script/metrics.txt expects
	// the kernel's words in it.
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Serve on a port in use: %v", err)
	}
}

func waitServeDone(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err, ok := <-done:
		if !ok || err != nil {
			t.Fatalf("done: %v (open %v), want nil once", err, ok)
		}
		if _, ok := <-done; ok {
			t.Fatal("done not closed after its error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still running 5s after ctx was cancelled")
	}
}
