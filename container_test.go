package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
	"golang.org/x/sys/unix"
)

// leakOnce makes the test binary a child that leaks until the OOM killer
// ends it the first time it runs, and exits 0 the next: its value is the
// file that says it ran before.
const leakOnce = "GUARDRUN_TEST_LEAK_ONCE"

func init() {
	marker := os.Getenv(leakOnce)
	if marker == "" || os.Getenv(asGuardrun) != "" {
		return
	}
	if _, err := os.Stat(marker); err == nil {
		// The score guardrun was given, not the -1000 it may keep for
		// itself (see shield in cgroup).
		adj, _ := os.ReadFile("/proc/self/oom_score_adj")
		fmt.Printf("leak-once: ran before, exiting 0; oom_score_adj %s\n", bytes.TrimSpace(adj))
		os.Exit(0)
	}
	if err := os.WriteFile(marker, []byte("leaking"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "leak-once:", err)
		os.Exit(3)
	}
	os.Exit(testchild.Main("leak", []string{"4"}))
}

// containerCeiling is the container's memory limit (linux.resources.memory.limit).
const containerCeiling = 128 << 20

// TestContainerReadOnlyCgroupfs runs guardrun as the process of a real
// container: runc, with the OCI runtime spec's default read-only
// /sys/fs/cgroup mount, a cgroup namespace, a 128 MiB memory limit and no
// network namespace, so that a receiver on 127.0.0.1 in this test is
// reachable. Inside, guardrun observes the container's own group: a
// leaking child is named as OOM-killed within a second of the kill (by
// the container's memory.events on v2, its memory.oom_control on v1),
// restarted, and one notification reaches the receiver. runc's cgroupfs
// driver runs on the host's v1 hierarchy and on the VM's v2 alike.
func TestContainerReadOnlyCgroupfs(t *testing.T) {
	h, runc, bundle := containerBundle(t)

	srv := newBodies(t)

	// With CAP_SYS_RESOURCE guardrun keeps the kernel's OOM killer off
	// itself (shield, in cgroup); the VM's root has it. This host's root
	// does not (its bounding set lacks it), so there guardrun may be
	// taken after its child, as the kernel sometimes does: a run where
	// the kernel's log shows that is run again, at most twice, and said.
	shield := hasCap(unix.CAP_SYS_RESOURCE)
	var caps []string
	if shield {
		caps = []string{"CAP_SYS_RESOURCE"}
	}
	var (
		id, out   string
		stdout    bytes.Buffer
		oomLineAt time.Time
		killedAt  chan time.Time
	)
	for attempt := 1; ; attempt++ {
		id = fmt.Sprintf("grtest-ctr-%d-%d", os.Getpid(), attempt)
		os.Remove(filepath.Join(bundle, "rootfs", "tmp", "leaked"))
		srv.reset() // what an attempt run again sent does not count
		args := []string{"/guardrun", "--name", "leaky", "--restart", "on-failure", "--max-restarts", "1",
			"--notify", srv.URL + "/hook", "--", "/guardrun", "-test.run=^$"}
		writeSpec(t, runc, bundle, "/"+id, args, []string{
			"PATH=/", "HOME=/tmp", "TMPDIR=/tmp", asGuardrun + "=1", leakOnce + "=/tmp/leaked",
		}, caps...)

		kills := kernelOOMKills(t)
		pidFile := filepath.Join(bundle, id+".pid")
		cmd := runcRun(runc, bundle, id)
		cmd.Args = append(cmd.Args[:len(cmd.Args)-1], "--pid-file", pidFile, id)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout.Reset()
		cmd.Stdout = &stdout
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			exec.Command(runc, "--root", filepath.Join(bundle, "state"), "delete", "--force", id).Run()
		})

		// The kill as the kernel counts it, read from outside the
		// container: the same counter guardrun reads inside.
		killedAt = make(chan time.Time, 2)
		stop := make(chan struct{})
		go watchOOMCounter(h, id, killedAt, stop)

		var log strings.Builder
		oomLineAt = time.Time{}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			log.WriteString(line + "\n")
			if oomLineAt.IsZero() && strings.Contains(line, "msg=oom_kill run=leaky") {
				oomLineAt = time.Now()
			}
		}
		err = cmd.Wait()
		close(stop)
		out = log.String()
		t.Logf("runc run took %v; guardrun's log:\n%s\nstdout:\n%s", time.Since(start).Round(time.Millisecond), out, stdout.String())
		if err == nil {
			break
		}
		k := kills()
		if b, _ := os.ReadFile(pidFile); !shield && attempt < 3 && len(b) > 0 && strings.Contains(k, "Killed process "+strings.TrimSpace(string(b))+" (") {
			t.Logf("attempt %d: the kernel's OOM killer took guardrun itself (pid %s) after its child, as it may when guardrun lacks CAP_SYS_RESOURCE; again:\n%s", attempt, strings.TrimSpace(string(b)), k)
			continue
		}
		t.Fatalf("runc run: %v (guardrun's restarted child exits 0); the kernel's OOM kills since the container started:\n%s", err, k)
	}

	shieldNote := "guardrun's own oom_score_adj is -1000, so that the kernel's OOM killer never takes it after the child, and the child and hooks get back the score guardrun was given"
	if !shield {
		shieldNote = "guardrun could not set its own oom_score_adj to -1000 ("
	}
	for _, want := range []string{
		"msg=\"observing the container's own group (read-only cgroupfs): ceiling = the container's " + map[string]string{"v2": "memory.max", "v1": "memory.limit_in_bytes"}[h.Version()] + " (128 MiB)",
		"run=leaky path=/sys/fs/cgroup",
		"msg=started run=leaky pid=",
		"backend=" + h.Version() + " cgroup=/sys/fs/cgroup",
		"ceiling=" + strconv.Itoa(containerCeiling),
		"level=WARN msg=oom_kill run=leaky",
		"killer=\"the kernel OOM killer\"",
		"msg=exited run=leaky",
		"cause=oom_kill code=137",
		"level=WARN msg=restarting run=leaky",
		shieldNote,
		"leak-once: ran before, exiting 0; oom_score_adj 0", // runc's default, which guardrun was given
	} {
		if !strings.Contains(out+stdout.String(), want) {
			t.Errorf("guardrun's output lacks %q", want)
		}
	}
	// The container has no /dev/kmsg: the kill is named the child's own
	// because the child is dying of a SIGKILL guardrun did not send, not
	// because the kernel's log said so.
	if m := regexp.MustCompile(`msg=started run=leaky pid=(\d+)`).FindStringSubmatch(out); m == nil {
		t.Error("no started line with a pid")
	} else if !regexp.MustCompile(`msg=oom_kill run=leaky .*victim_pid=` + m[1] + ` `).MatchString(out) {
		t.Errorf("the oom_kill line does not name the child, pid %s, as the victim", m[1])
	}
	if n := strings.Count(out, "msg=started run=leaky"); n != 2 {
		t.Errorf("%d starts, want 2: the leak and its restart", n)
	}
	if strings.Contains(out, "no cgroup") {
		t.Errorf("guardrun fell back to sampling")
	}

	select {
	case at := <-killedAt:
		if oomLineAt.IsZero() {
			t.Fatal("no oom_kill line")
		}
		d := oomLineAt.Sub(at)
		t.Logf("the kernel's OOM kill (seen outside) to guardrun's oom_kill line: %v", d.Round(time.Millisecond))
		if d > time.Second {
			t.Errorf("guardrun named the OOM kill %v after the kernel counted it, want within 1s", d)
		}
	default:
		t.Error("the container's oom_kill counter never rose, seen from outside")
	}

	// guardrun check, in the same container, says what a run gets there.
	writeSpec(t, runc, bundle, "/"+id, []string{"/guardrun", "check"}, []string{"PATH=/", asGuardrun + "=1"})
	ckOut, err := runcRun(runc, bundle, id+"-check").CombinedOutput()
	t.Logf("guardrun check in the container:\n%s", ckOut)
	if err != nil {
		t.Errorf("guardrun check in the container: %v\n%s", err, ckOut)
	}
	for _, want := range []string{
		"container group:   /sys/fs/cgroup",
		// runc's default capabilities lack CAP_SYS_RESOURCE, as Docker's do.
		"guardrun could not set its own oom_score_adj to -1000 (",
		"grant it CAP_SYS_RESOURCE",
		"can enforce:       under --cgroup auto, observing the container's own group (read-only cgroupfs): ceiling = the container's ",
	} {
		if !strings.Contains(string(ckOut), want) {
			t.Errorf("guardrun check lacks %q:\n%s", want, ckOut)
		}
	}

	got := srv.all()
	if len(got) != 1 || !strings.Contains(got[0], `"kind":"oom_kill"`) || !strings.Contains(got[0], `"run":"leaky"`) {
		t.Fatalf("the receiver got %d notifications, want one oom_kill of leaky:\n%s", len(got), strings.Join(got, "\n"))
	}
}

// TestContainerWorkerKillIsNotTheService: in a container there is no
// /dev/kmsg (runc's default devices, as Docker's), so nothing names the
// process the kernel's OOM killer took. A pre-fork master (PM2's cluster,
// gunicorn) whose worker is killed three times is told each time as a
// process of its group, never as the service's own death, and its clean
// exit ends the run with exit 0. The worker leaks 4 MiB every 10 ms: on
// the host, where guardrun has no CAP_SYS_RESOURCE to keep the kernel off
// itself, 8 MiB steps had the kernel take guardrun after the worker in 10
// of 23 kills, and 4 MiB steps in none of 45.
func TestContainerWorkerKillIsNotTheService(t *testing.T) {
	_, runc, bundle := containerBundle(t)
	srv := newBodies(t)
	args := []string{"/guardrun", "--name", "pf", "--notify", srv.URL + "/hook", "--dedup-window", "1h",
		"--", "/guardrun", "-test.run=^$", "--", "prefork", "3", "4", "/tmp/deaths"}
	var out string
	for attempt := 1; ; attempt++ {
		id := fmt.Sprintf("grtest-ctrpf-%d-%d", os.Getpid(), attempt)
		srv.reset()
		writeSpec(t, runc, bundle, "/"+id, args, []string{"PATH=/", "HOME=/tmp", "TMPDIR=/tmp", asGuardrun + "=1", testchild.Env + "=1"}, benchCaps()...)
		kills := kernelOOMKills(t)
		pidFile := filepath.Join(bundle, id+".pid")
		cmd := runcRun(runc, bundle, id)
		cmd.Args = append(cmd.Args[:len(cmd.Args)-1], "--pid-file", pidFile, id)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		exec.Command(runc, "--root", filepath.Join(bundle, "state"), "delete", "--force", id).Run()
		out = stderr.String()
		t.Logf("guardrun's log:\n%s", out)
		if err == nil {
			break
		}
		k := kills()
		if b, _ := os.ReadFile(pidFile); benchCaps() == nil && attempt < 3 && len(b) > 0 && strings.Contains(k, "Killed process "+strings.TrimSpace(string(b))+" (") {
			t.Logf("attempt %d: the kernel's OOM killer took guardrun itself (pid %s), as it may when guardrun lacks CAP_SYS_RESOURCE; again:\n%s", attempt, strings.TrimSpace(string(b)), k)
			continue
		}
		t.Fatalf("runc run: %v (the master exits 0 after 3 worker deaths); the kernel's OOM kills since the container started:\n%s", err, k)
	}
	// The kernel may count a kill more than the master saw deaths (the VM
	// once counted 4 for 3): at least one per death.
	if n := strings.Count(out, "msg=oom_kill run=pf"); n < 3 {
		t.Errorf("%d oom_kill lines, want one for each of the 3 deaths", n)
	}
	if strings.Contains(out, "victim_pid=") {
		t.Errorf("a kill is named, with no /dev/kmsg to name it: the master is alive, so it is not the master")
	}
	if !regexp.MustCompile(`pf exited 0 after the kernel OOM killer killed \d+ processes in its group at its 128 MiB ceiling`).MatchString(out) {
		t.Errorf("guardrun's last line does not say the master exited 0 after the kills")
	}
	got := srv.all()
	want := `"message":"pf: the kernel OOM killer killed a process in its group at its 128 MiB ceiling (peak 128 MiB); the kernel's log did not name it"`
	if len(got) == 0 || !strings.Contains(got[0], want) {
		t.Errorf("the first notification lacks %s: %q", want, got)
	}
	for _, g := range got {
		if strings.Contains(g, "pf was killed") || strings.Contains(g, `"kind":"exited"`) {
			t.Errorf("a notification tells a worker's death as the service's: %s", g)
		}
	}
}

// BenchmarkContainerOOMKill: b.N OOM kills of guardrun's child inside a
// runc container set up as in TestContainerReadOnlyCgroupfs (read-only
// cgroupfs, a 128 MiB limit), restarted each time: how long after the
// kernel counted each kill (the container's oom_kill counter, read from
// outside every millisecond) guardrun's oom_kill line came. It reports
// the median and the largest (ms-median, ms-max). scripts/vmbench runs it
// on v2 in the VM and on the host:
//
//	go test -run '^$' -bench '^BenchmarkContainerOOMKill$' -benchtime 20x .
func BenchmarkContainerOOMKill(b *testing.B) {
	h, runc, bundle := containerBundle(b)
	id := fmt.Sprintf("grtest-ctrbench-%d-%d", os.Getpid(), b.N) // b.N differs between the benchmark's rounds
	args := []string{"/guardrun", "--name", "leaky", "--restart", "always", "--max-restarts", "0",
		"--backoff-min", "1ms", "--backoff-max", "1ms", "--", "/guardrun", "-test.run=^$", "--", "leak", "16"}
	writeSpec(b, runc, bundle, "/"+id, args, []string{"PATH=/", "HOME=/tmp", "TMPDIR=/tmp", asGuardrun + "=1", testchild.Env + "=1"}, benchCaps()...)
	cmd := runcRun(runc, bundle, id)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	killedAt := make(chan time.Time, b.N+1)
	stop := make(chan struct{})
	defer close(stop)
	go watchOOMCounter(h, id, killedAt, stop)
	kills := kernelOOMKills(b)
	b.ResetTimer()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		exec.Command(runc, "--root", filepath.Join(bundle, "state"), "delete", "--force", id).Run()
	})
	var lines []time.Time
	var tail []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if len(tail) == 8 {
			tail = tail[1:]
		}
		tail = append(tail, sc.Text())
		if strings.Contains(sc.Text(), "msg=oom_kill run=leaky") {
			lines = append(lines, time.Now())
			if len(lines) == b.N {
				exec.Command(runc, "--root", filepath.Join(bundle, "state"), "kill", id, "TERM").Run()
			}
		}
	}
	cmd.Wait()
	b.StopTimer()
	if len(lines) < b.N {
		b.Fatalf("%d oom_kill lines, want %d; guardrun's last lines:\n%s\nthe kernel's OOM kills since the container started:\n%s", len(lines), b.N, strings.Join(tail, "\n"), kills())
	}
	var d []float64
	for i := range lines {
		select {
		case at := <-killedAt:
			d = append(d, float64(lines[i].Sub(at))/1e6)
		default:
			b.Fatalf("the container's oom_kill counter rose %d times, seen from outside; guardrun named %d", i, len(lines))
		}
	}
	sorted := slices.Clone(d)
	slices.Sort(sorted)
	b.ReportMetric(sorted[len(sorted)/2], "ms-median")
	b.ReportMetric(sorted[len(sorted)-1], "ms-max")
	b.Logf("the kernel's OOM kill (seen outside) to guardrun's oom_kill line, %d kills, ms in order: %.1f", len(d), d)
}

// bodies is a real HTTP receiver on 127.0.0.1 that keeps each request's
// body, in order.
type bodies struct {
	URL string
	mu  sync.Mutex
	got []string
}

func newBodies(t testing.TB) *bodies {
	b := &bodies{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.got = append(b.got, string(body))
		b.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	b.URL = srv.URL
	return b
}

func (b *bodies) reset() {
	b.mu.Lock()
	b.got = nil
	b.mu.Unlock()
}

func (b *bodies) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.got)
}

// kernelOOMKills returns a func that gives the kernel's lines about OOM
// kills logged since kernelOOMKills was called (from /dev/kmsg), to say
// which process the kernel chose when a test sees one die; "" if the log
// cannot be read.
func kernelOOMKills(t testing.TB) func() string {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return func() string { return "(/dev/kmsg: " + err.Error() + ")" }
	}
	t.Cleanup(func() { unix.Close(fd) })
	unix.Seek(fd, 0, io.SeekEnd)
	return func() string {
		var b strings.Builder
		buf := make([]byte, 8192)
		for {
			n, err := unix.Read(fd, buf)
			if err == unix.EPIPE {
				continue // records overwritten before this read: skip on
			}
			if err != nil || n <= 0 {
				break
			}
			rec := string(buf[:n])
			if _, msg, ok := strings.Cut(rec, ";"); ok && (strings.Contains(msg, "Killed process") || strings.Contains(msg, "oom-kill:") || strings.Contains(msg, "oom_reaper")) {
				b.WriteString(strings.TrimSpace(msg) + "\n")
			}
		}
		return b.String()
	}
}

// benchCaps: BenchmarkContainerOOMKill's container gets CAP_SYS_RESOURCE
// where this process has it, so guardrun can keep the kernel's OOM killer
// off itself, unless GUARDRUN_BENCH_NO_SHIELD=1 asks to see what happens
// without.
func benchCaps() []string {
	if os.Getenv("GUARDRUN_BENCH_NO_SHIELD") == "1" || !hasCap(unix.CAP_SYS_RESOURCE) {
		return nil
	}
	return []string{"CAP_SYS_RESOURCE"}
}

// hasCap reports whether this process has capability c in its effective
// set (and so may give it to a container).
func hasCap(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return false
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0
}

// containerBundle makes a runc bundle whose root holds this test binary,
// static, as /guardrun, the container's only program: guardrun, and its
// child.
func containerBundle(t testing.TB) (h cgroup.Hierarchy, runc, bundle string) {
	t.Helper()
	h = cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	runc = requireRunc(t)
	if h.Version() == "v2" && unix.Access(h.V2, unix.W_OK) != nil {
		skipOrFail(t, "needs a writable cgroup2 at "+h.V2+" for runc to make the container's group")
	}
	bundle = t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	staticSelf(t, filepath.Join(rootfs, "guardrun"))
	return h, runc, bundle
}

// runcRun runs the bundle's container as id. runc's own state goes with
// the test; pivot_root cannot leave an initramfs (the VM's /), so there
// the container's root is entered with --no-pivot.
func runcRun(runc, bundle, id string) *exec.Cmd {
	cmd := exec.Command(runc, "--root", filepath.Join(bundle, "state"), "run", "--bundle", bundle)
	if onRamfs("/") {
		cmd.Args = append(cmd.Args, "--no-pivot")
	}
	cmd.Args = append(cmd.Args, id)
	return cmd
}

// requireRunc finds runc: scripts/test installs it, scripts/vmtest packs
// the host's, and says when it had none to pack (GUARDRUN_TEST_RUNC).
func requireRunc(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("runc"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("GUARDRUN_TEST_RUNC") == "absent" {
		t.Skip("needs runc, and the host scripts/vmtest ran on had none to pack (apt-get install runc)")
	}
	skipOrFail(t, "needs runc (apt-get install runc)")
	return ""
}

func skipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("GUARDRUN_TEST_REQUIRE") == "1" {
		t.Fatalf("%s, and GUARDRUN_TEST_REQUIRE=1 forbids skipping", why)
	}
	t.Skip(why)
}

// staticSelf puts a statically linked copy of this test binary at path,
// the container's only program: guardrun, and its child. The VM's test
// binaries are static (CGO_ENABLED=0); one built with -race is not, and
// is built again without it.
func staticSelf(t testing.TB, path string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	dynamic := false
	for _, p := range f.Progs {
		dynamic = dynamic || p.Type == elf.PT_INTERP
	}
	f.Close()
	if !dynamic {
		copyFile(t, self, path)
		return
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		skipOrFail(t, "this test binary is dynamically linked (-race) and there is no go to build a static one")
	}
	c := exec.Command(gobin, "test", "-c", "-o", path, ".")
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("build a static test binary: %v\n%s", err, out)
	}
}

// writeSpec writes the bundle's config.json: runc spec's default (its
// /sys/fs/cgroup mount is read-only) with args, env, a cgroup namespace,
// no network namespace, and the container's memory limit; caps are added
// to the default capability sets.
func writeSpec(t testing.TB, runc, bundle, cgroupsPath string, args, env []string, caps ...string) {
	t.Helper()
	file := filepath.Join(bundle, "config.json")
	os.Remove(file) // runc spec will not write over one
	if out, err := exec.Command(runc, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	p := spec["process"].(map[string]any)
	p["terminal"], p["args"], p["env"] = false, args, env
	if c, ok := p["capabilities"].(map[string]any); ok {
		for _, set := range []string{"bounding", "effective", "permitted"} {
			l, _ := c[set].([]any)
			for _, cp := range caps {
				l = append(l, cp)
			}
			c[set] = l
		}
	}
	spec["root"] = map[string]any{"path": "rootfs", "readonly": false}
	linux := spec["linux"].(map[string]any)
	var ns []any
	for _, n := range linux["namespaces"].([]any) {
		if typ := n.(map[string]any)["type"]; typ != "network" && typ != "cgroup" {
			ns = append(ns, n)
		}
	}
	linux["namespaces"] = append(ns, map[string]any{"type": "cgroup"})
	linux["cgroupsPath"] = cgroupsPath
	res, _ := linux["resources"].(map[string]any)
	if res == nil {
		res = map[string]any{}
	}
	res["memory"] = map[string]any{"limit": containerCeiling}
	linux["resources"] = res
	var ro bool
	for _, m := range spec["mounts"].([]any) {
		m := m.(map[string]any)
		if m["destination"] == "/sys/fs/cgroup" {
			for _, o := range m["options"].([]any) {
				ro = ro || o == "ro"
			}
		}
	}
	if !ro {
		t.Fatalf("runc spec's /sys/fs/cgroup mount is not read-only: %s", b)
	}
	if b, err = json.MarshalIndent(spec, "", "\t"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// onRamfs: dir is on the initramfs, which pivot_root cannot leave.
func onRamfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && (st.Type == unix.RAMFS_MAGIC || st.Type == unix.TMPFS_MAGIC)
}

// watchOOMCounter sends the time of each rise of the container's oom_kill
// counter (v2 memory.events, v1 memory.oom_control), read from the host's
// side every millisecond: a reference clock for guardrun's lines. It
// stops when at is full.
func watchOOMCounter(h cgroup.Hierarchy, id string, at chan<- time.Time, stop <-chan struct{}) {
	file := filepath.Join(h.V2, id, "memory.events")
	if h.Version() == "v1" {
		file = filepath.Join(h.V1Memory, id, "memory.oom_control")
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	seen := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		b, err := os.ReadFile(file)
		if err != nil {
			continue // not made yet, or gone
		}
		for _, line := range strings.Split(string(b), "\n") {
			v, ok := strings.CutPrefix(line, "oom_kill ")
			if n, err := strconv.Atoi(v); ok && err == nil && n > seen {
				now := time.Now()
				for ; seen < n; seen++ {
					select {
					case at <- now:
					default:
						return
					}
				}
			}
		}
	}
}
