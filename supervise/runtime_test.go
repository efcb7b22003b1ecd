package supervise

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/testchild"
)

// The young generation V8 keeps beside the old space that
// --max-old-space-size limits: heap_size_limit is the old space plus
// three 16 MiB semi-spaces in Node 20.
const youngGen = 48 << 20

// leakJS leaks from a function whose name a stack would show.
const leakJS = `const held = [];
function leakyCache() { for (;;) held.push(new Array(100000).fill({a: 1})); }
leakyCache();`

// liveJS holds some heap, says ready, and lives until its stdin closes.
const liveJS = `const held = [];
for (let i = 0; i < 100; i++) held.push(new Array(10000).fill(i));
process.stdin.on('data', () => {});
process.stdin.on('end', () => process.exit(0));
process.stdout.write('ready\n');`

func requireNode(t *testing.T) string {
	t.Helper()
	return testchild.RequireTool(t, "apt-get install nodejs", "node", "nodejs")
}

func testDiagDir(t *testing.T, uid, gid int) string {
	t.Helper()
	dir, err := MakeDiagDir("grtest-"+t.Name(), uid, gid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := RemoveDiagDir(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// bareEnv is an environment without the test runner's NODE_OPTIONS or
// JAVA_TOOL_OPTIONS, so the plans are the test's own.
func bareEnv() []string { return []string{"PATH=" + os.Getenv("PATH"), "HOME=/"} }

func TestNodeHeapOOMLeavesAReport(t *testing.T) {
	node := requireNode(t)
	for _, tc := range []struct {
		name      string
		restartAt uint64
		hint      uint64
	}{
		{"share of the ceiling", 0, 96 << 20},
		{"restart-at threshold", 112 << 20, 120 << 20}, // 112 MiB and half the 16 MiB left

	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testDiagDir(t, -1, -1)
			argv := []string{node, "-e", leakJS}
			plan := planFor(argv, bareEnv(), 128<<20, tc.restartAt, dir)
			if plan.limit != tc.hint || plan.dir != dir {
				t.Fatalf("plan: limit %d, dir %q; want %d in %q", plan.limit, plan.dir, tc.hint, dir)
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = plan.env
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGABRT {
				t.Fatalf("node ended %v; want SIGABRT of a heap OOM\n%s", err, stderr.String())
			}
			paths := nodeReports(dir)
			if len(paths) != 1 {
				t.Fatalf("reports %q; want one", paths)
			}
			if p, ok := findNodeReport(dir, cmd.Process.Pid); !ok || p != paths[0] {
				t.Fatalf("findNodeReport(%d) = %q, %v; want %q", cmd.Process.Pid, p, ok, paths[0])
			}
			r, err := readNodeReport(paths[0])
			if err != nil {
				t.Fatal(err)
			}
			if !isHeapOOM(r) || r.Runtime != "node" || r.Pid != cmd.Process.Pid {
				t.Fatalf("report %+v; want node's heap OOM of pid %d", r, cmd.Process.Pid)
			}
			if want := "Allocation failed - JavaScript heap out of memory"; r.Event != want {
				t.Errorf("event %q, want %q", r.Event, want)
			}
			if r.HeapLimit < tc.hint || r.HeapLimit > tc.hint+youngGen {
				t.Errorf("heap limit %d MiB; want the %d MiB hint and at most the young generation more", r.HeapLimit>>20, tc.hint>>20)
			}
			if r.HeapUsed < tc.hint/2 {
				t.Errorf("heap used %d MiB of a %d MiB heap that ran out", r.HeapUsed>>20, tc.hint>>20)
			}
			if i := slices.IndexFunc(r.HeapSpaces, func(s HeapSpace) bool { return s.Name == "old_space" }); i < 0 || r.HeapSpaces[0].Name != "read_only_space" {
				t.Errorf("heap spaces %+v; want V8's, in its order", r.HeapSpaces)
			}
			// Node 20 walks no stack in an isolate out of memory ("No
			// stack.", "Unavailable."): none is better than a placeholder,
			// and a Node that gives one must name the leak.
			if len(r.Stack) > 0 && !strings.Contains(strings.Join(r.Stack, "\n"), "leakyCache") {
				t.Errorf("stack %q does not name leakyCache", r.Stack)
			}
			if err := removeReport(paths[0]); err != nil || len(nodeReports(dir)) != 0 {
				t.Errorf("removeReport: %v, left %q", err, nodeReports(dir))
			}
		})
	}
}

// started is a process of the test that said "ready" on stdout; it ends
// when its stdin closes.
type started struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

func start(t *testing.T, env []string, argv ...string) *started {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &started{cmd, stdin}
	t.Cleanup(func() { s.end(t) })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("%s said %q, %v; want ready", argv[0], line, err)
	}
	return s
}

// end closes its stdin and wants a clean exit.
func (s *started) end(t *testing.T) {
	if s.stdin == nil {
		return
	}
	s.stdin.Close()
	s.stdin = nil
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("%s (pid %d) ended %v; want exit 0", s.cmd.Path, s.cmd.Process.Pid, err)
	}
}

func TestRequestNodeReportAsksOnlyNodeWithTheFlags(t *testing.T) {
	node := requireNode(t)
	dir := testDiagDir(t, -1, -1)
	plan := planFor([]string{node}, bareEnv(), 128<<20, 0, dir)
	ours := start(t, plan.env, node, "-e", liveJS)
	// The shell of npm start: NODE_OPTIONS with the flags in its
	// environment, and no handler for the signal.
	sh := start(t, plan.env, "sh", "-c", "echo ready; cat >/dev/null")
	// A larger node of someone else's: no flags of this run.
	other := start(t, bareEnv(), node, "-e", strings.Replace(liveJS, "i < 100", "i < 1000", 1))
	pids := []int{sh.cmd.Process.Pid, other.cmd.Process.Pid, ours.cmd.Process.Pid}

	if got := reportTargets(dir, pids); !slices.Equal(got, []int{ours.cmd.Process.Pid}) {
		t.Fatalf("targets %v of sh %d, other node %d, ours %d; want only ours", got, pids[0], pids[1], pids[2])
	}
	r := requestNodeReport(dir, pids, 10*time.Second, "")
	if r == nil {
		t.Fatal("no report")
	}
	if r.Pid != ours.cmd.Process.Pid || r.Event != "SIGURG" || isHeapOOM(r) || r.File != "" {
		t.Fatalf("report %+v; want a SIGURG report of pid %d, not kept", r, ours.cmd.Process.Pid)
	}
	if r.HeapLimit < plan.limit || r.HeapLimit > plan.limit+youngGen || r.HeapUsed == 0 || r.HeapUsed > r.HeapLimit || len(r.HeapSpaces) == 0 {
		t.Errorf("heap: limit %d, used %d, spaces %+v; want the %d MiB hint's", r.HeapLimit, r.HeapUsed, r.HeapSpaces, plan.limit>>20)
	}
	if left := nodeReports(dir); len(left) != 0 {
		t.Errorf("left %q; the report is removed after reading", left)
	}

	keep := filepath.Join(t.TempDir(), "before-restart.json")
	r = requestNodeReport(dir, pids, 10*time.Second, keep)
	if r == nil || r.File != keep {
		t.Fatalf("kept report %+v; want it at %s", r, keep)
	}
	if k, err := readNodeReport(keep); err != nil || k.Pid != r.Pid {
		t.Errorf("kept file: %+v, %v", k, err)
	}
	if left := nodeReports(dir); len(left) != 0 {
		t.Errorf("left %q; a kept report is moved", left)
	}

	if r := requestNodeReport(dir, pids[:2], 10*time.Second, ""); r != nil {
		t.Errorf("asked sh and another run's node: %+v; want nil", r)
	}
	ours.end(t)
	sh.end(t)
	other.end(t)
}

func TestNodeHalfWrittenReportIsNotYet(t *testing.T) {
	node := requireNode(t)
	dir := testDiagDir(t, -1, -1)
	plan := planFor([]string{node}, bareEnv(), 128<<20, 0, dir)
	ours := start(t, plan.env, node, "-e", liveJS)
	r := requestNodeReport(dir, []int{ours.cmd.Process.Pid}, 10*time.Second, filepath.Join(dir, "whole.json"))
	if r == nil {
		t.Fatal("no report")
	}
	whole, err := os.ReadFile(r.File)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, len(whole) / 3, len(whole) - 2} {
		p := filepath.Join(dir, "report.20261201.120000."+strconv.Itoa(ours.cmd.Process.Pid)+".0.001.json")
		os.WriteFile(p, whole[:n], 0o600)
		if got, err := readNodeReport(p); err == nil {
			t.Errorf("the first %d of %d bytes read as %+v", n, len(whole), got)
		}
	}
}

func TestRuntimeDiagDirIs0700(t *testing.T) {
	old := syscall.Umask(0o277)
	dir, err := MakeDiagDir("grtest-api", -1, -1)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode() != os.ModeDir|0o700 || !strings.HasPrefix(dir, filepath.Join(os.TempDir(), "guardrun-grtest-api-")) {
		t.Fatalf("%s: %v, %v; want a new directory of mode 0700 in %s", dir, fi.Mode(), err, os.TempDir())
	}
	os.WriteFile(filepath.Join(dir, "report.json"), nil, 0o600)
	if err := RemoveDiagDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s after RemoveDiagDir: %v", dir, err)
	}

	t.Setenv("TMPDIR", "/nonexistent/tmp")
	if _, err := MakeDiagDir("grtest-api", -1, -1); err == nil || !strings.Contains(err.Error(), "/nonexistent/tmp") {
		t.Fatalf("error %v; want one naming the path", err)
	}
}

// TestNodeReportsAsTheChildsUserNeedsRoot runs node as nobody, as --user
// does: the directory is theirs to write into.
func TestNodeReportsAsTheChildsUserNeedsRoot(t *testing.T) {
	node := requireNode(t)
	if os.Geteuid() != 0 {
		if os.Getenv("GUARDRUN_TEST_REQUIRE") == "1" {
			t.Fatal("needs root, and GUARDRUN_TEST_REQUIRE=1 forbids skipping")
		}
		t.Skip("needs root: runs node as nobody")
	}
	const nobody = 65534
	dir := testDiagDir(t, nobody, nobody)
	fi, err := os.Stat(dir)
	if err != nil || fi.Sys().(*syscall.Stat_t).Uid != nobody || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v %+v; want nobody's, 0700", dir, err, fi)
	}
	plan := planFor([]string{node}, bareEnv(), 128<<20, 0, dir)
	cmd := exec.Command(node, "-e", liveJS)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Env = plan.env
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("node as nobody said %q, %v", line, err)
	}
	if r := requestNodeReport(dir, []int{cmd.Process.Pid}, 10*time.Second, ""); r == nil || r.Pid != cmd.Process.Pid {
		t.Fatalf("report of node as nobody: %+v", r)
	}
}

const fillJava = `import java.util.ArrayList;
public class Fill {
	public static void main(String[] a) {
		ArrayList<byte[]> held = new ArrayList<>();
		for (;;) held.add(new byte[1 << 20]);
	}
}
`

func TestJVMHeapOOMIsMarked(t *testing.T) {
	javac := testchild.RequireTool(t, "apt-get install openjdk-17-jdk-headless", "javac")
	java := testchild.RequireTool(t, "apt-get install openjdk-17-jdk-headless", "java")
	classes := t.TempDir()
	os.WriteFile(filepath.Join(classes, "Fill.java"), []byte(fillJava), 0o600)
	if out, err := exec.Command(javac, "-d", classes, filepath.Join(classes, "Fill.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name      string
		restartAt uint64
		heap      uint64 // what the JVM should take, before its alignment
	}{
		{"share of the ceiling", 0, 96 << 20},
		{"restart-at threshold", 115 << 20, 115 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testDiagDir(t, -1, -1)
			argv := []string{java, "-cp", classes, "Fill"}
			plan := planFor(argv, bareEnv(), 128<<20, tc.restartAt, dir)
			if plan.dir != dir || plan.limit < tc.heap {
				t.Fatalf("plan %+v; want the marker in %s and a heap of %d MiB", plan, dir, tc.heap>>20)
			}
			// The heap the JVM takes from the flags: MaxRAMPercentage
			// alone would give 50% of a 128 MiB ceiling.
			flags := exec.Command(java, "-XX:+PrintFlagsFinal", "-version")
			flags.Env = plan.env
			out, err := flags.Output()
			if err != nil {
				t.Fatal(err)
			}
			if heap := maxHeapSize(string(out)); heap < tc.heap || heap > tc.heap+4<<20 {
				t.Fatalf("MaxHeapSize %d MiB; want %d MiB", heap>>20, tc.heap>>20)
			}

			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = plan.env
			var stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			err = cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Fatalf("java ended %v; want exit 3 of -XX:+ExitOnOutOfMemoryError\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "Terminating due to java.lang.OutOfMemoryError: Java heap space") {
				t.Errorf("stderr:\n%s", stderr.String())
			}
			pid, ok := jvmHeapOOM(dir)
			if !ok || pid != cmd.Process.Pid {
				t.Fatalf("jvmHeapOOM = %d, %v; want pid %d", pid, ok, cmd.Process.Pid)
			}
			if pid, ok := jvmHeapOOM(dir); ok {
				t.Errorf("the marker of pid %d is still there after it was told", pid)
			}
			if r := (&RuntimeReport{Runtime: "jvm", Pid: pid, Event: jvmOOMEvent}); !isHeapOOM(r) {
				t.Errorf("isHeapOOM(%+v) = false", r)
			}
		})
	}
}

func maxHeapSize(flags string) uint64 {
	for line := range strings.Lines(flags) {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == "MaxHeapSize" {
			n, _ := strconv.ParseUint(f[3], 10, 64)
			return n
		}
	}
	return 0
}

func TestIsHeapOOM(t *testing.T) {
	for _, tc := range []struct {
		r    *RuntimeReport
		want bool
	}{
		{nil, false},
		{&RuntimeReport{Runtime: "node", Event: "Allocation failed - JavaScript heap out of memory"}, true},
		{&RuntimeReport{Runtime: "node", Event: "Allocation failed - process out of memory"}, false},
		{&RuntimeReport{Runtime: "node", Event: "SIGURG"}, false},
		{&RuntimeReport{Runtime: "jvm", Event: "java.lang.OutOfMemoryError"}, true},
	} {
		if got := isHeapOOM(tc.r); got != tc.want {
			t.Errorf("isHeapOOM(%+v) = %v, want %v", tc.r, got, tc.want)
		}
	}
}

// findNodeReport returns, for the tests, the newest report process pid wrote into dir.
func findNodeReport(dir string, pid int) (string, bool) {
	var last string
	for _, p := range nodeReports(dir) {
		if n, _ := parseNodeReportName(filepath.Base(p)); n.pid == pid {
			last = p
		}
	}
	return last, last != ""
}
