package observe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/guardrun/guardrun/internal/proc"
)

// ErrNotLoopback is returned by Serve for an address beyond loopback when
// remote scrapes were not allowed; the CLI adds the flag that allows them.
var ErrNotLoopback = errors.New("not a loopback address")

// Metrics exports one run's State to Prometheus.
//
// Nothing is kept up to date as the run goes: the State is read when
// someone scrapes (or a textfile is written) and costs nothing otherwise.
type Metrics struct {
	snap func() State
	// pid is the process whose process_* families /metrics carries:
	// guardrun itself.
	pid int
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
	return &Metrics{snap: snap, pid: os.Getpid()}
}

// maxScrapesInFlight bounds concurrent scrapes. A scrape is cheap; this
// only bounds a misbehaving scraper, as promhttp's MaxRequestsInFlight did.
const maxScrapesInFlight = 4

// Handler serves the metrics in the text format, which every Prometheus
// accepts whatever else its Accept header offers. The body is not
// gzipped, as promhttp's was on request: it is some 5 KiB.
func (m *Metrics) Handler() http.Handler {
	inFlight := make(chan struct{}, maxScrapesInFlight)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case inFlight <- struct{}{}:
			defer func() { <-inFlight }()
		default:
			http.Error(w, fmt.Sprintf("limit of concurrent scrapes reached (%d), try again later", maxScrapesInFlight), http.StatusServiceUnavailable)
			return
		}
		// A failure to read /proc/self must not hide the run's figures,
		// which are what the scrape is for: processFamilies leaves out
		// what it could not read.
		fams := append(runFamilies(m.snap()), processFamilies(m.pid)...)
		var buf bytes.Buffer
		writeText(&buf, fams)
		w.Header().Set("Content-Type", textContentType)
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		w.Write(buf.Bytes())
	})
}

// WriteTextfile writes the run's guardrun_* families to path for
// node_exporter's textfile collector, atomically (see WriteFile) and
// mode 0644. The temporary file's name does not end in .prom, so the
// collector never reads half of one.
//
// The process_* families are left out: node_exporter exports its own, and
// a textfile that repeated those names would make its gather fail
// ("collected before with the same name and label values").
func (m *Metrics) WriteTextfile(path string) error {
	if filepath.Ext(path) != ".prom" {
		return fmt.Errorf("metrics textfile %q: name must end in .prom: node_exporter's textfile collector reads only *.prom files", path)
	}
	var buf bytes.Buffer
	writeText(&buf, runFamilies(m.snap()))
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

// metricDesc is one family's name, help and type, and the label names
// its samples carry besides run.
type metricDesc struct {
	name   string
	help   string
	typ    metricType
	labels []string
}

// of is the family of d with one sample of v, labelled run=run and then
// d.labels with labelValues in order.
func (d metricDesc) of(v float64, run string, labelValues ...string) family {
	labels := []labelPair{{"run", run}}
	for i, name := range d.labels {
		labels = append(labels, labelPair{name, labelValues[i]})
	}
	return family{name: d.name, help: d.help, typ: d.typ, samples: []sample{{labels: labels, value: v}}}
}

// The names and labels of the guardrun_* families are a contract with
// dashboards and alerts: change them only with a new name.
//
// The help texts are the same for every run on purpose: node_exporter
// merges the textfiles of several runs into one family per name, and
// refuses families whose help differs.
var (
	descUp          = metricDesc{"guardrun_up", "1 while the command's child runs (phase running or stopping), 0 otherwise (starting, waiting for memory, backing off, ended).", gauge, nil}
	descCurrent     = metricDesc{"guardrun_memory_current_bytes", "Memory charged to the command's cgroup at the last sample (memory.current or memory.usage_in_bytes).", gauge, nil}
	descWorking     = metricDesc{"guardrun_memory_working_set_bytes", "Working set of the command's cgroup at the last sample: memory charged less the page cache that is not shmem, which the kernel reclaims before it OOM-kills.", gauge, nil}
	descCache       = metricDesc{"guardrun_memory_cache_bytes", "Page cache charged to the command's cgroup at the last sample, shmem and tmpfs included (memory.stat file or total_cache).", gauge, nil}
	descPeak        = metricDesc{"guardrun_memory_peak_bytes", "Highest memory charged to the command's cgroup over the whole run, across restarts.", gauge, nil}
	descLimit       = metricDesc{"guardrun_memory_limit_bytes", "Memory ceiling set on the command's cgroup (memory.max); absent when none is set.", gauge, nil}
	descRestartAt   = metricDesc{"guardrun_memory_restart_at_bytes", "Memory at which guardrun restarts the command before the kernel kills it; absent when not set.", gauge, nil}
	descOOMKills    = metricDesc{"guardrun_oom_kills_total", "Processes of the command killed by the kernel's OOM killer in its cgroup (memory.events oom_kill).", counter, nil}
	descHeapOOMs    = metricDesc{"guardrun_heap_ooms_total", "Processes of the command that died of their runtime's heap limit (V8's JavaScript heap out of memory) before the cgroup's ceiling.", counter, nil}
	descMemRestarts = metricDesc{"guardrun_memory_restarts_total", "Times guardrun stopped the command to restart it before its ceiling (--restart-at, --restart-on-pressure); counted in guardrun_restarts_total as well.", counter, nil}
	descRestarts    = metricDesc{"guardrun_restarts_total", "Times guardrun restarted the command.", counter, nil}
	descCrossings   = metricDesc{"guardrun_threshold_crossings_total", "Times the command's memory crossed --restart-at (a restart follows if it stays over for the grace period).", counter, nil}
	descStalls      = metricDesc{"guardrun_pressure_stalls_total", "Episodes of memory pressure stalls in the command's cgroup that fired the PSI trigger set on memory.pressure.", counter, nil}
	descGrowth      = metricDesc{"guardrun_memory_growth_bytes_per_second", "Sustained memory growth rate while a leak is suspected; 0 otherwise.", gauge, nil}
	descChildUp     = metricDesc{"guardrun_child_start_time_seconds", "Start time of the current child process, in seconds since the Unix epoch; absent between children.", gauge, nil}
	descInfo        = metricDesc{"guardrun_info", "Constant 1, labelled with the run's cgroup backend, the current child's group and the run's phase.", gauge, []string{"backend", "cgroup", "phase"}}
)

// runFamilies turns a State into the guardrun_* families.
func runFamilies(s State) []family {
	run := labelValue(s.Run)
	up := 0.0
	if s.Phase == PhaseRunning || s.Phase == PhaseStopping {
		up = 1
	}
	fams := []family{
		descUp.of(up, run),
		descCurrent.of(float64(s.Current), run),
		descWorking.of(float64(s.WorkingSet), run),
		descCache.of(float64(s.Cache), run),
		descPeak.of(float64(s.Peak), run),
		descOOMKills.of(float64(s.OOMKills), run),
		descHeapOOMs.of(float64(s.HeapOOMs), run),
		descRestarts.of(float64(s.Restarts), run),
		descMemRestarts.of(float64(s.MemoryRestarts), run),
		descCrossings.of(float64(s.Crossings), run),
		descStalls.of(float64(s.PressureStalls), run),
		descGrowth.of(s.LeakRate, run),
		descInfo.of(1, run, labelValue(s.Backend), labelValue(s.Cgroup), labelValue(s.Phase)),
	}
	// A ceiling or restart point of 0 means "not set", not "zero bytes":
	// exporting 0 would make current/limit ratios in alerts divide by it.
	if s.Ceiling > 0 {
		fams = append(fams, descLimit.of(float64(s.Ceiling), run))
	}
	if s.RestartAt > 0 {
		fams = append(fams, descRestartAt.of(float64(s.RestartAt), run))
	}
	if !s.ChildStarted.IsZero() {
		// Seconds and the fraction apart: UnixNano()/1e9 loses the last
		// digits to float64 rounding (…0.25 came out as …0.2499998).
		t := s.ChildStarted
		fams = append(fams, descChildUp.of(float64(t.Unix())+float64(t.Nanosecond())/1e9, run))
	}
	return fams
}

// labelValue makes v a valid label value. The format's label values are
// UTF-8, and Prometheus fails the whole scrape on one that is not; a run
// name or a cgroup path is whatever bytes the user or the filesystem gave.
func labelValue(v string) string {
	return strings.ToValidUTF8(v, "\uFFFD")
}

// The process_* families are client_golang's process collector's on
// Linux, names and help unchanged, so that dashboards made for any Go
// exporter read guardrun's. Its process_network_*_bytes_total are not
// among them: they were read from /proc/self/net/netstat, which counts
// the whole network namespace, not the process.
var (
	descCPU       = metricDesc{"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", counter, nil}
	descOpenFDs   = metricDesc{"process_open_fds", "Number of open file descriptors.", gauge, nil}
	descMaxFDs    = metricDesc{"process_max_fds", "Maximum number of open file descriptors.", gauge, nil}
	descVSize     = metricDesc{"process_virtual_memory_bytes", "Virtual memory size in bytes.", gauge, nil}
	descMaxVSize  = metricDesc{"process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes.", gauge, nil}
	descRSS       = metricDesc{"process_resident_memory_bytes", "Resident memory size in bytes.", gauge, nil}
	descStartTime = metricDesc{"process_start_time_seconds", "Start time of the process since unix epoch in seconds.", gauge, nil}
)

// processFamilies reads the process_* families of pid. What cannot be
// read is left out rather than failing the rest: the run's figures are
// what a scrape is for.
func processFamilies(pid int) []family {
	var fams []family
	one := func(d metricDesc, v float64) {
		fams = append(fams, family{name: d.name, help: d.help, typ: d.typ, samples: []sample{{value: v}}})
	}
	if st, err := proc.ReadStat(pid); err == nil {
		one(descCPU, float64(st.UTime+st.STime)/proc.ClockTicks)
		one(descVSize, float64(st.VSize))
		one(descRSS, float64(st.RSS))
		// /proc/stat's btime is whole seconds; starttime counts ticks
		// from it.
		if boot, err := proc.BootTime(); err == nil {
			one(descStartTime, float64(boot.Unix())+float64(st.StartTime)/proc.ClockTicks)
		}
	}
	if n, err := proc.FDs(pid); err == nil {
		one(descOpenFDs, float64(n))
	}
	// The soft limits, as /proc/PID/limits shows them; RLIM_INFINITY is
	// exported as it is, 2^64-1, as client_golang did. prlimit(2) with no
	// new limit is getrlimit(2) for any pid, so all of these are pid's.
	var lim unix.Rlimit
	if unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &lim) == nil {
		one(descMaxFDs, float64(lim.Cur))
	}
	if unix.Prlimit(pid, unix.RLIMIT_AS, nil, &lim) == nil {
		one(descMaxVSize, float64(lim.Cur))
	}
	return fams
}
