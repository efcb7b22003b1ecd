package observe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
)

// ErrNotLoopback is returned by Serve for an address beyond loopback when
// remote scrapes were not allowed; the CLI adds the flag that allows them.
var ErrNotLoopback = errors.New("not a loopback address")

// Metrics exports one run's State to Prometheus.
//
// It is a collector, not a set of gauges the supervisor keeps up to date:
// the State is read when someone scrapes (or a textfile is written) and
// costs nothing otherwise.
type Metrics struct {
	snap func() State
	// reg serves /metrics: the run plus guardrun's own process metrics.
	// It is not prometheus.DefaultRegisterer, so nothing imported can
	// add to it behind our back.
	reg *prometheus.Registry
	// runOnly is the textfile's: node_exporter exports its own process_*
	// series, and a textfile that repeated those names would make its
	// gather fail ("collected before with the same name and label values").
	runOnly *prometheus.Registry
}

// NewMetrics exports the State that snap returns. snap is called at each
// scrape and each textfile write, from any goroutine; it must be cheap and
// safe to call concurrently.
//
// Besides the guardrun_* families, /metrics carries the standard process_*
// families of guardrun itself (process_resident_memory_bytes,
// process_open_fds, process_cpu_seconds_total...): whoever watches a memory
// supervisor wants to see that the supervisor is not the leak. The go_*
// families are left out: they are some forty series per run that answer
// questions about the Go runtime, which an operator cannot act on, and
// the process_* ones already show what they would show of guardrun's size.
func NewMetrics(snap func() State) *Metrics {
	c := &runCollector{snap: snap}
	m := &Metrics{snap: snap, reg: prometheus.NewRegistry(), runOnly: prometheus.NewRegistry()}
	m.reg.MustRegister(c, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.runOnly.MustRegister(c)
	return m
}

// Handler serves the metrics in the exposition formats Prometheus asks for.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A failure to read /proc/self must not hide the run's figures,
		// which are what the scrape is for.
		ErrorHandling: promhttp.ContinueOnError,
		// Collection is cheap; this only bounds a misbehaving scraper.
		MaxRequestsInFlight: 4,
	})
}

// WriteTextfile writes the run's guardrun_* families to path for
// node_exporter's textfile collector, atomically (see WriteFile) and
// mode 0644. The temporary file's name does not end in .prom, so the
// collector never reads half of one.
func (m *Metrics) WriteTextfile(path string) error {
	if filepath.Ext(path) != ".prom" {
		return fmt.Errorf("metrics textfile %q: name must end in .prom: node_exporter's textfile collector reads only *.prom files", path)
	}
	mfs, err := m.runOnly.Gather()
	if err != nil {
		return fmt.Errorf("metrics textfile %q: %w", path, err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			return fmt.Errorf("metrics textfile %q: %w", path, err)
		}
	}
	return WriteFile(path, buf.Bytes(), 0o644)
}

// Serve listens on addr and serves h at /metrics until ctx is done; then
// done receives the server's error (nil after a clean stop) and is closed.
// The bound address is returned, so that a caller who asked for port 0
// can say where it went.
//
// Unless allowRemote is set, addr must be loopback: the metrics name the
// command's group and its memory, and an address like 0.0.0.0 would give
// them to anyone who can reach the host. A host name is checked on the
// address it bound.
func Serve(ctx context.Context, addr string, allowRemote bool, h http.Handler) (bound string, done <-chan error, err error) {
	if !allowRemote {
		if err := checkLoopback(addr); err != nil {
			return "", nil, err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("serve metrics on %q: %w", addr, err)
	}
	bound = ln.Addr().String()
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !allowRemote && !tcp.IP.IsLoopback() {
		ln.Close()
		return "", nil, notLoopback(addr)
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{
		Handler: mux,
		// Bounds a client that opens a connection and never finishes its
		// request (slowloris); a scrape sends its headers at once.
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		serveErr := make(chan error, 1)
		go func() { serveErr <- srv.Serve(ln) }()
		select {
		case err := <-serveErr:
			errc <- err
			return
		case <-ctx.Done():
		}
		// A scrape in flight takes milliseconds; one that takes longer
		// than this is cut rather than holding guardrun's exit.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			return
		}
		errc <- nil
	}()
	return bound, errc, nil
}

// checkLoopback refuses what is certainly beyond loopback before anything
// is bound: an empty host (every interface) and an IP literal that is not
// loopback. Host names are left to the check of the bound address.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("serve metrics on %q: %w", addr, err)
	}
	if host == "" {
		return notLoopback(addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil && !ip.IsLoopback() {
		return notLoopback(addr)
	}
	return nil
}

func notLoopback(addr string) error {
	return fmt.Errorf("serve metrics on %q: %w: the metrics would be open to the network; listen on 127.0.0.1 or [::1], or allow remote scrapes explicitly", addr, ErrNotLoopback)
}

// runCollector turns a State into the guardrun_* families. The names and
// labels are a contract with dashboards and alerts: change them only with
// a new name.
type runCollector struct {
	snap func() State
}

func metricDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append([]string{"run"}, labels...), nil)
}

// The help texts are the same for every run on purpose: node_exporter
// merges the textfiles of several runs into one family per name, and
// refuses families whose help differs.
var (
	descUp          = metricDesc("guardrun_up", "1 while the command's child runs (phase running or stopping), 0 otherwise (starting, waiting for memory, backing off, ended).")
	descCurrent     = metricDesc("guardrun_memory_current_bytes", "Memory charged to the command's cgroup at the last sample (memory.current or memory.usage_in_bytes).")
	descWorking     = metricDesc("guardrun_memory_working_set_bytes", "Working set of the command's cgroup at the last sample: memory charged less the page cache that is not shmem, which the kernel reclaims before it OOM-kills.")
	descCache       = metricDesc("guardrun_memory_cache_bytes", "Page cache charged to the command's cgroup at the last sample, shmem and tmpfs included (memory.stat file or total_cache).")
	descPeak        = metricDesc("guardrun_memory_peak_bytes", "Highest memory charged to the command's cgroup over the whole run, across restarts.")
	descLimit       = metricDesc("guardrun_memory_limit_bytes", "Memory ceiling set on the command's cgroup (memory.max); absent when none is set.")
	descRestartAt   = metricDesc("guardrun_memory_restart_at_bytes", "Memory at which guardrun restarts the command before the kernel kills it; absent when not set.")
	descOOMKills    = metricDesc("guardrun_oom_kills_total", "Processes of the command killed by the kernel's OOM killer in its cgroup (memory.events oom_kill).")
	descHeapOOMs    = metricDesc("guardrun_heap_ooms_total", "Processes of the command that died of their runtime's heap limit (V8's JavaScript heap out of memory) before the cgroup's ceiling.")
	descMemRestarts = metricDesc("guardrun_memory_restarts_total", "Times guardrun stopped the command to restart it before its ceiling (--restart-at, --restart-on-pressure); counted in guardrun_restarts_total as well.")
	descRestarts    = metricDesc("guardrun_restarts_total", "Times guardrun restarted the command.")
	descCrossings   = metricDesc("guardrun_threshold_crossings_total", "Times the command's memory crossed --restart-at (a restart follows if it stays over for the grace period).")
	descStalls      = metricDesc("guardrun_pressure_stalls_total", "Episodes of memory pressure stalls in the command's cgroup that fired the PSI trigger set on memory.pressure.")
	descGrowth      = metricDesc("guardrun_memory_growth_bytes_per_second", "Sustained memory growth rate while a leak is suspected; 0 otherwise.")
	descChildUp     = metricDesc("guardrun_child_start_time_seconds", "Start time of the current child process, in seconds since the Unix epoch; absent between children.")
	descInfo        = metricDesc("guardrun_info", "Constant 1, labelled with the run's cgroup backend, the current child's group and the run's phase.", "backend", "cgroup", "phase")
)

var allDescs = []*prometheus.Desc{
	descUp, descCurrent, descWorking, descCache, descPeak, descLimit, descRestartAt, descOOMKills, descHeapOOMs,
	descRestarts, descMemRestarts, descCrossings, descStalls, descGrowth, descChildUp, descInfo,
}

func (c *runCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *runCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap()
	run := labelValue(s.Run)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{run}, labels...)...)
	}
	counter := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), run)
	}

	up := 0.0
	if s.Phase == PhaseRunning || s.Phase == PhaseStopping {
		up = 1
	}
	gauge(descUp, up)
	gauge(descCurrent, float64(s.Current))
	gauge(descWorking, float64(s.WorkingSet))
	gauge(descCache, float64(s.Cache))
	gauge(descPeak, float64(s.Peak))
	// A ceiling or restart point of 0 means "not set", not "zero bytes":
	// exporting 0 would make current/limit ratios in alerts divide by it.
	if s.Ceiling > 0 {
		gauge(descLimit, float64(s.Ceiling))
	}
	if s.RestartAt > 0 {
		gauge(descRestartAt, float64(s.RestartAt))
	}
	counter(descOOMKills, s.OOMKills)
	counter(descHeapOOMs, s.HeapOOMs)
	counter(descRestarts, s.Restarts)
	counter(descMemRestarts, s.MemoryRestarts)
	counter(descCrossings, s.Crossings)
	counter(descStalls, s.PressureStalls)
	gauge(descGrowth, s.LeakRate)
	if !s.ChildStarted.IsZero() {
		// Seconds and the fraction apart: UnixNano()/1e9 loses the last
		// digits to float64 rounding (…0.25 came out as …0.2499998).
		t := s.ChildStarted
		gauge(descChildUp, float64(t.Unix())+float64(t.Nanosecond())/1e9)
	}
	gauge(descInfo, 1, labelValue(s.Backend), labelValue(s.Cgroup), labelValue(s.Phase))
}

// labelValue makes v a valid label value. MustNewConstMetric panics on invalid
// UTF-8, and a run name or a cgroup path is whatever bytes the user or the
// filesystem gave.
func labelValue(v string) string {
	return strings.ToValidUTF8(v, "\uFFFD")
}
