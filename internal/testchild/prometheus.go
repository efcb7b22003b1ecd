package testchild

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The real Prometheus the tests scrape guardrun with (observe's metrics
// test, the dashboard and rules test): one way to start it, wait for it
// and ask it.

// StartPrometheus runs Prometheus with config cfg in dir on a free
// loopback port until the test ends, and returns its base URL once it is
// ready.
func StartPrometheus(t testing.TB, bin, dir, cfg string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	web := FreeAddr(t) // never 9090: a Prometheus already on the host has it
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web)
	prom.Stdout, prom.Stderr = logf, logf
	start := time.Now()
	if err := prom.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { prom.Wait(); close(exited) }()
	// Registered after the caller's t.TempDir, so it runs before the
	// directory is removed: Prometheus must be gone before its TSDB is.
	t.Cleanup(func() {
		StopProcess(prom, exited, 5*time.Second)
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	base := "http://" + web
	for deadline := start.Add(30 * time.Second); ; {
		if err := GetJSON(base+"/-/ready", nil); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited before it was ready: %v", prom.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus not ready within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("prometheus %s ready after %v", web, time.Since(start).Round(time.Millisecond))
	return base
}

// StopProcess sends c SIGTERM and waits for exited, then kills it.
func StopProcess(c *exec.Cmd, exited <-chan struct{}, wait time.Duration) {
	c.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(wait):
		c.Process.Kill()
		<-exited
	}
}

// FreeAddr is a free loopback address, for a server the test starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// GetJSON fetches u and, if v is not nil, decodes its JSON body into v.
func GetJSON(u string, v any) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if v == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}
