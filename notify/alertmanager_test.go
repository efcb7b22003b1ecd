package notify

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/testchild"
)

// TestRealAlertmanager posts to a real Alertmanager (Debian's
// prometheus-alertmanager) on loopback and reads the alert back through its
// API: firing, then resolved with the same labels.
func TestRealAlertmanager(t *testing.T) {
	bin := testchild.RequireTool(t, "apt-get install prometheus-alertmanager", "prometheus-alertmanager", "alertmanager")
	dir := t.TempDir()
	os.WriteFile(dir+"/am.yml", []byte("route:\n  receiver: none\nreceivers:\n  - name: none\n"), 0o644)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	am := exec.Command(bin, "--config.file="+dir+"/am.yml", "--storage.path="+dir,
		"--web.listen-address="+addr, "--cluster.listen-address=")
	if err := am.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { am.Process.Kill(); am.Wait() })
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + addr + "/-/ready"); err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if i == 200 {
			t.Fatal("alertmanager not ready within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	n := New(fast(sink(t, "alertmanager+http://"+addr, "")))
	n.Observe(oom("app", 2))
	alert := waitAlert(t, addr, func(a amAlert) bool { return a.Status.State == "active" })
	if alert.Labels["alertname"] != "guardrun_oom_kill" || alert.Labels["run"] != "app" || alert.Labels["host"] != "vps1" ||
		alert.Labels["severity"] != "critical" || alert.Annotations["summary"] != "app was killed by the kernel OOM killer at its 512 MiB ceiling (peak 512 MiB)" {
		t.Fatalf("alert %+v", alert)
	}
	// The child is up and the window passes quietly: resolved, endsAt now,
	// and Alertmanager no longer lists it as active.
	n.Observe(oomStarted("app"))
	for i := 0; len(alerts(addr)) > 0; i++ {
		if i == 200 {
			t.Fatalf("the alert is still active 10s after its resolution: %+v", alerts(addr))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := n.Close(time.Second); r.Undelivered != 0 {
		t.Fatalf("report %+v", r)
	}
}

type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

// alerts lists the active alerts of run "app" through Alertmanager's API.
func alerts(addr string) []amAlert {
	resp, err := http.Get(fmt.Sprintf("http://%s/api/v2/alerts?filter=run%%3D%%22app%%22", addr))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var as []amAlert
	json.NewDecoder(resp.Body).Decode(&as)
	return as
}

// waitAlert waits (bounded) for guardrun's alert matching ok.
func waitAlert(t *testing.T, addr string, ok func(amAlert) bool) amAlert {
	t.Helper()
	var last []amAlert
	for range 200 {
		last = alerts(addr)
		for _, a := range last {
			if ok(a) {
				return a
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no matching alert within 10s; alertmanager has %+v", last)
	return amAlert{}
}
