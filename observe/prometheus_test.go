package observe

import (
	"fmt"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/testchild"
)

// TestPrometheusScrapes has a real Prometheus server (Debian's package)
// scrape Serve on loopback, and reads the run's counter back through its
// query API as it changes between scrapes.
func TestPrometheusScrapes(t *testing.T) {
	bin := testchild.RequireTool(t, "apt-get install prometheus", "prometheus")
	dir := t.TempDir()

	// Each scrape sees one restart more than the last: a value that moves
	// shows Prometheus is reading the State at each scrape.
	var scrapes atomic.Int64
	const run = "prom-it"
	m := NewMetrics(func() State {
		return State{Run: run, Phase: PhaseRunning, Backend: "v1", Ceiling: 64 << 20,
			Current: 1 << 20, Peak: 2 << 20, Restarts: int(scrapes.Add(1))}
	})
	bound, done, err := Serve(t.Context(), "127.0.0.1:0", false, m.Handler())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { <-done }) // after t.Context is cancelled

	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: guardrun
    static_configs:
      - targets: [%q]
`, bound)
	start := time.Now()
	base := testchild.StartPrometheus(t, bin, dir, cfg)
	deadline := start.Add(30 * time.Second)

	// The first scrape comes about 5 s after ready, not 1 s: Prometheus
	// 2.42 hands discovered targets to its scrape manager on a 5 s tick
	// (discovery's updatert and the scrape manager's reload loop), and no
	// flag of that version shortens it.
	query := base + "/api/v1/query?query=" + url.QueryEscape(`guardrun_restarts_total{run="`+run+`"}`)
	first := -1.0
	for {
		if v, ok := promQuery(query); ok {
			if first < 0 {
				first = v
				t.Logf("first value %v after %v", v, time.Since(start).Round(time.Millisecond))
			} else if v > first {
				t.Logf("value %v after %v", v, time.Since(start).Round(time.Millisecond))
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("guardrun_restarts_total{run=%q} never rose within 30s (first value %v)", run, first)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var targets struct {
		Data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if testchild.GetJSON(base+"/api/v1/targets", &targets) != nil {
		t.Fatal("GET /api/v1/targets failed")
	}
	at := targets.Data.ActiveTargets
	if len(at) != 1 || at[0].ScrapeURL != "http://"+bound+"/metrics" || at[0].Health != "up" || at[0].LastError != "" {
		t.Fatalf("targets %+v, want one, http://%s/metrics, up", at, bound)
	}

	// The figures come through as exported, labels and all.
	for q, want := range map[string]float64{
		`guardrun_up{run="` + run + `"}`:                                1,
		`guardrun_memory_limit_bytes{run="` + run + `"}`:                64 << 20,
		`guardrun_info{run="` + run + `",backend="v1",phase="running"}`: 1,
	} {
		if v, ok := promQuery(base + "/api/v1/query?query=" + url.QueryEscape(q)); !ok || v != want {
			t.Errorf("%s = %v (found %v), want %v", q, v, ok, want)
		}
	}
	// Every family was taken: the 14 guardrun_* ones this State sets
	// (no restart point, no child start) and the 7 process_* ones.
	q := `count(count by (__name__) ({job="guardrun",__name__=~"guardrun_.+|process_.+"}))`
	if v, ok := promQuery(base + "/api/v1/query?query=" + url.QueryEscape(q)); !ok || v != 14+7 {
		t.Errorf("%s = %v (found %v), want %v", q, v, ok, 14+7)
	}
	q = `process_resident_memory_bytes{job="guardrun"}`
	if v, ok := promQuery(base + "/api/v1/query?query=" + url.QueryEscape(q)); !ok || v < 1<<20 {
		t.Errorf("%s = %v (found %v), want guardrun's RSS", q, v, ok)
	}
}

// promQuery runs an instant query and returns its one sample's value.
func promQuery(u string) (float64, bool) {
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"` // [unix time, "value"]
			} `json:"result"`
		} `json:"data"`
	}
	if testchild.GetJSON(u, &r) != nil || r.Status != "success" || len(r.Data.Result) != 1 {
		return 0, false
	}
	s, ok := r.Data.Result[0].Value[1].(string)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}
