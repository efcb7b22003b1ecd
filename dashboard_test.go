package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
)

const (
	dashboardFile = "contrib/grafana/guardrun.json"
	rulesFile     = "contrib/prometheus/guardrun.rules.yml"
	runbookFile   = "docs/RUNBOOK.md"
	runbookURL    = "https://github.com/guardrun/guardrun/blob/main/docs/RUNBOOK.md"
)

// TestDashboardAndRulesOnRealPrometheus has a real Prometheus (Debian's
// package) scrape a real guardrun on loopback, whose child leaks steadily
// in a real cgroup, with contrib/prometheus's rules loaded. Every query of
// contrib/grafana's dashboard, its template variables set as Grafana would
// set them for this run, must return series; every rule must evaluate
// without error, name only metrics guardrun exports and link its section
// of docs/RUNBOOK.md; and the leak alert must fire for this run with
// guardrun's forecast in its description.
//
// The VM of scripts/vmtest has no Prometheus: there the test skips, and
// the host run of scripts/test, which installs it, covers it.
func TestDashboardAndRulesOnRealPrometheus(t *testing.T) {
	bin := testchild.RequireTool(t, "apt-get install prometheus; the cgroup v2 VM has none, scripts/test runs this on the host", "prometheus")
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	dash := readDashboard(t)
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := time.Now()

	// guardrun with everything the dashboard draws: a ceiling, a restart
	// point, and a child that grows 20 MiB/s, which a 2 s leak window sees
	// as a leak some 5 s in (warm-up, window, hold) and which would reach
	// --restart-at (1.8 GiB) only after some 90 s.
	run := fmt.Sprintf("grtest-dashboard-%d", os.Getpid())
	metrics := testchild.FreeAddr(t)
	exe, _ := os.Executable()
	g := guardrunCmd(exe, []string{"--name", run, "--state-dir", "off", "--max", "2G",
		"--restart", "on-failure", "--restart-at", "90%", "--sample", "100ms", "--leak-window", "2s",
		"--metrics-addr", metrics}, "ramp", "4", "200ms")
	var stderr syncBuffer
	g.Stdout, g.Stderr = &stderr, &stderr
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { g.Wait(); close(exited) }()
	t.Cleanup(func() {
		testchild.StopProcess(g, exited, 10*time.Second)
		if t.Failed() {
			t.Logf("guardrun:\n%s", stderr.String())
		}
	})

	base := testchild.StartPrometheus(t, bin, dir, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: guardrun
    static_configs:
      - targets: [%q]
`, rules, metrics))

	// Synchronised on what Prometheus says, never on a sleep: the target
	// is up, then each query has its series. The first scrape comes about
	// 5 s after ready (observe's TestPrometheusScrapes says why).
	deadline := time.Now().Add(60 * time.Second)
	poll := func(what string, ok func() (bool, string)) {
		t.Helper()
		for {
			done, last := ok()
			if done {
				t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
				return
			}
			select {
			case <-exited:
				t.Fatalf("guardrun exited while waiting for %s: %v", what, g.ProcessState)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s; last: %s", what, last)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	poll("target up", func() (bool, string) {
		var r struct {
			Data struct {
				ActiveTargets []struct {
					ScrapeURL string `json:"scrapeUrl"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := testchild.GetJSON(base+"/api/v1/targets", &r); err != nil {
			return false, err.Error()
		}
		at := r.Data.ActiveTargets
		return len(at) == 1 && at[0].ScrapeURL == "http://"+metrics+"/metrics" && at[0].Health == "up", fmt.Sprintf("%+v", at)
	})

	// The variables as Grafana sends one selected value of a multi-value
	// variable: regex characters escaped, the backslash doubled for a
	// PromQL string. $__rate_interval as a 15 s scrape would make it.
	vars := strings.NewReplacer(
		"${run}", grafanaRegex(run), "$run", grafanaRegex(run),
		"${instance}", grafanaRegex(metrics), "$instance", grafanaRegex(metrics),
		"${__rate_interval}", "1m", "$__rate_interval", "1m",
		"${__interval}", "15s", "$__interval", "15s",
		"${__range}", "1h", "$__range", "1h",
	)
	exprs := dashboardExprs(t, dash)
	for i, q := range exprs {
		if exprs[i] = vars.Replace(q); strings.Contains(exprs[i], "$") {
			t.Fatalf("dashboard query %q has a variable the test does not set", exprs[i])
		}
	}

	// A misspelled metric is a query without error and without series,
	// which no wait would fix: every guardrun_* or process_* name in the
	// dashboard and the rules must be one this guardrun exports, checked
	// on the first scrape.
	var exported []string
	poll("the first scrape's names", func() (bool, string) {
		var r struct {
			Data []string `json:"data"`
		}
		if err := testchild.GetJSON(base+"/api/v1/label/__name__/values?match[]="+url.QueryEscape(`{job="guardrun"}`), &r); err != nil {
			return false, err.Error()
		}
		exported = r.Data
		return slices.Contains(exported, "guardrun_info"), fmt.Sprint(exported)
	})
	rs, err := promRules(base)
	if err != nil {
		t.Fatal(err)
	}
	reads := map[string][]string{}
	for _, q := range exprs {
		reads["dashboard query "+q] = metricNameRE.FindAllString(q, -1)
	}
	for _, r := range rs {
		reads["rule "+r.Name] = metricNameRE.FindAllString(r.Query, -1)
	}
	for what, names := range reads {
		for _, name := range names {
			if !slices.Contains(exported, name) {
				t.Errorf("%s reads %s, which guardrun does not export (it exports %v)", what, name, exported)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The increase() panels need two scrapes, the leak forecast's the
	// leak established.
	poll(fmt.Sprintf("series for all %d dashboard queries", len(exprs)), func() (bool, string) {
		for _, q := range exprs {
			if n, err := promSeries(base, q); err != nil || n == 0 {
				return false, fmt.Sprintf("%s: %d series (%v)", q, n, err)
			}
		}
		return true, ""
	})

	// The template variables: label_values(SELECTOR, LABEL) lists this
	// run and its instance.
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValuesRE.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Fatalf("variable %s: %q is not label_values(SELECTOR, LABEL)", v.Name, v.Definition)
		}
		sel, label := vars.Replace(m[1]), m[2]
		want := map[string]string{"run": run, "instance": metrics}[label]
		var r struct {
			Data []string `json:"data"`
		}
		u := base + "/api/v1/label/" + label + "/values?match[]=" + url.QueryEscape(sel)
		if err := testchild.GetJSON(u, &r); err != nil || !slices.Contains(r.Data, want) {
			t.Errorf("variable %s: %s gives %q (%v), want %q among them", v.Name, v.Definition, r.Data, err, want)
		}
	}

	// Every rule evaluated, without error.
	poll(fmt.Sprintf("all %d rules evaluated", len(rs)), func() (bool, string) {
		if rs, err = promRules(base); err != nil {
			return false, err.Error()
		}
		for _, r := range rs {
			if r.Health == "unknown" {
				return false, r.Name + " not evaluated yet"
			}
		}
		return len(rs) > 0, "no rules loaded"
	})
	runbook, err := os.ReadFile(runbookFile)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
		if r.Health != "ok" || r.LastError != "" {
			t.Errorf("rule %s: health %q, error %q", r.Name, r.Health, r.LastError)
		}
		// Each alert says what and where, and links its section of the
		// runbook, whose heading is the alert's name (GitHub's anchor for
		// it is the name in lower case).
		for _, a := range []string{"summary", "description"} {
			if v := r.Annotations[a]; !strings.Contains(v, "$labels.run") || !strings.Contains(v, "$labels.instance") {
				t.Errorf("rule %s: %s %q does not name the run and the instance", r.Name, a, v)
			}
		}
		if u, want := r.Annotations["runbook_url"], runbookURL+"#"+strings.ToLower(r.Name); u != want {
			t.Errorf("rule %s: runbook_url %q, want %q", r.Name, u, want)
		}
		if !regexp.MustCompile(`(?m)^## ` + regexp.QuoteMeta(r.Name) + `$`).Match(runbook) {
			t.Errorf("rule %s: %s has no section \"## %s\"", r.Name, runbookFile, r.Name)
		}
	}
	t.Logf("rules: %s", strings.Join(names, ", "))

	// The leak alert fires for this run, with guardrun's forecast worked
	// out by the template's query against the real series.
	poll("GuardrunMemoryLeak firing", func() (bool, string) {
		var r struct {
			Data struct {
				Alerts []struct {
					Labels      map[string]string `json:"labels"`
					Annotations map[string]string `json:"annotations"`
					State       string            `json:"state"`
				} `json:"alerts"`
			} `json:"data"`
		}
		if err := testchild.GetJSON(base+"/api/v1/alerts", &r); err != nil {
			return false, err.Error()
		}
		for _, a := range r.Data.Alerts {
			if a.Labels["alertname"] == "GuardrunMemoryLeak" && a.Labels["run"] == run && a.Labels["instance"] == metrics && a.State == "firing" {
				d := a.Annotations["description"]
				if !strings.Contains(d, "reaches its ceiling in") {
					t.Fatalf("GuardrunMemoryLeak's description has no forecast: %q", d)
				}
				t.Logf("GuardrunMemoryLeak: %s", d)
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", r.Data.Alerts)
	})
}

// grafanaRegex is v as Grafana puts a multi-value variable's one value
// into a PromQL regex: escaped, and the escape doubled inside the string.
func grafanaRegex(v string) string {
	return strings.ReplaceAll(regexp.QuoteMeta(v), `\`, `\\`)
}

var (
	labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	metricNameRE  = regexp.MustCompile(`\b(guardrun|process)_[a-z_]+\b`)
)

// dashboard is what the test reads of a Grafana dashboard.
type dashboard struct {
	Panels     []dashPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type dashPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // a collapsed row's
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// dashboardExprs are the queries of every panel, rows' panels included.
func dashboardExprs(t *testing.T, d dashboard) []string {
	t.Helper()
	var exprs []string
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("%s: panel %q has a target without a query", dashboardFile, p.Title)
				}
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if len(exprs) == 0 {
		t.Fatalf("%s: no queries", dashboardFile)
	}
	return exprs
}

// promSeries runs an instant query and returns how many series it gave.
func promSeries(base, q string) (int, error) {
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	// A query Prometheus refuses answers 400 with its error in the body.
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("query %q: %s: %w", q, resp.Status, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query %q: %s", q, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return 0, fmt.Errorf("query %q: a %s, not an instant vector", q, r.Data.ResultType)
	}
	return len(r.Data.Result), nil
}

type promRule struct {
	Name        string            `json:"name"`
	Query       string            `json:"query"`
	Health      string            `json:"health"`
	LastError   string            `json:"lastError"`
	Annotations map[string]string `json:"annotations"`
}

// promRules are the rules Prometheus loaded, sorted by name.
func promRules(base string) ([]promRule, error) {
	var r struct {
		Data struct {
			Groups []struct {
				Rules []promRule `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := testchild.GetJSON(base+"/api/v1/rules", &r); err != nil {
		return nil, err
	}
	var rs []promRule
	for _, g := range r.Data.Groups {
		rs = append(rs, g.Rules...)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	return rs, nil
}
