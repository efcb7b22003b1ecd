package supervise

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/proc"
)

// What a runtime says about itself when its heap runs out or guardrun
// asks: Node.js's diagnostic reports (--report-on-fatalerror,
// --report-on-signal, Node >= 12, allowed in NODE_OPTIONS) and a marker
// file the JVM's -XX:OnOutOfMemoryError writes, both into the run's own
// directory (MakeDiagDir).

// reportSignal is the signal that asks Node.js for a report
// (--report-signal). Node's default, SIGUSR2, is taken: nodemon restarts
// its child on it and applications use it for their own reloads, and
// guardrun forwards it. SIGWINCH, ignored by default too, comes with every
// terminal resize and guardrun forwards it as well. SIGURG is the one
// whose default action is to ignore it (signal(7)) and that nothing sends
// unasked: the kernel raises it only for TCP urgent data on a socket whose
// owner was set with F_SETOWN, which libuv never does. So a SIGURG that
// reaches a process without Node's handler (a shell the process was
// started from, a pid reused meanwhile) does nothing; the Go runtime,
// which uses SIGURG to preempt goroutines, takes an extra one as a
// spurious preemption. Node 20 accepts any name for --report-signal
// without a word (a name that is not a signal just never fires), so
// SIGURG was checked for real: kill -URG writes a report each time.
const (
	reportSignal     = unix.SIGURG
	reportSignalName = "SIGURG"
)

// reportPoll is how often requestNodeReport looks for the report it
// asked for. Node writes the report in place (no temporary file and
// rename) and says nothing when it is done, so "done" is a file that
// parses; a poll of one small directory for the second or two before a
// restart costs less than an inotify descriptor and a reader per request.
const reportPoll = 20 * time.Millisecond

// jvmMarker is the name, before ".PID", of the file the JVM's
// -XX:OnOutOfMemoryError command writes into the diagnostic directory.
const jvmMarker = "jvm-heap-oom"

// jvmOOMEvent is RuntimeReport.Event for a JVM's heap death.
const jvmOOMEvent = "java.lang.OutOfMemoryError"

// MakeDiagDir makes the run's own directory for the runtime's reports:
// new, under os.TempDir(), mode 0700. uid and gid are the user the child
// runs as (--user), who must be able to write into it, so the directory
// becomes theirs; -1 leaves guardrun's, as in chown(2). RemoveDiagDir
// removes it. The errors are os's, which name the path.
func MakeDiagDir(name string, uid, gid int) (string, error) {
	dir, err := os.MkdirTemp("", "guardrun-"+strings.ReplaceAll(name, "/", "_")+"-")
	if err != nil {
		return "", err
	}
	// MkdirTemp asks for 0700 less the umask; a umask like 0277 would
	// leave the child unable to write.
	if err := os.Chmod(dir, 0o700); err != nil {
		os.Remove(dir)
		return "", err
	}
	if uid != -1 || gid != -1 {
		if err := os.Lchown(dir, uid, gid); err != nil {
			os.Remove(dir)
			return "", fmt.Errorf("%w (for the child's user %d:%d)", err, uid, gid)
		}
	}
	return dir, nil
}

// RemoveDiagDir removes the directory and the reports left in it. The
// child may have owned it, but RemoveAll unlinks what it finds and never
// follows a symlink out of it.
func RemoveDiagDir(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove the diagnostic directory %q: %w", dir, err)
	}
	return nil
}

// nodeReportFlags are the NODE_OPTIONS that make Node.js write a report
// into dir when it dies of a fatal error (the heap OOM among them) and
// when it gets reportSignal.
func nodeReportFlags(dir string) []string {
	return []string{"--report-on-fatalerror", "--report-directory=" + nodeQuote(dir),
		"--report-on-signal", "--report-signal=" + reportSignalName}
}

// nodeQuote quotes s for NODE_OPTIONS, which Node splits at spaces unless
// they are inside double quotes, where a backslash escapes the next byte.
func nodeQuote(s string) string {
	if !strings.ContainsAny(s, " \t\"\\") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// nodeReportName is a report's file name as Node.js makes it:
// report.YYYYMMDD.HHMMSS.PID.TID.SEQ.json.
type nodeReportName struct {
	stamp    string // YYYYMMDD.HHMMSS
	pid, seq int
}

func parseNodeReportName(name string) (nodeReportName, bool) {
	f := strings.Split(name, ".")
	if len(f) != 7 || f[0] != "report" || f[6] != "json" {
		return nodeReportName{}, false
	}
	pid, err1 := strconv.Atoi(f[3])
	_, err2 := strconv.Atoi(f[4])
	seq, err3 := strconv.Atoi(f[5])
	if err1 != nil || err2 != nil || err3 != nil {
		return nodeReportName{}, false
	}
	return nodeReportName{stamp: f[1] + "." + f[2], pid: pid, seq: seq}, true
}

// nodeReports returns the paths of the Node.js reports in dir, oldest
// first by the time in their names; nil when there are none or dir cannot
// be read. A report may still be being written: readNodeReport says.
func nodeReports(dir string) []string {
	ents, _ := os.ReadDir(dir)
	type found struct {
		path string
		name nodeReportName
	}
	var fs []found
	for _, e := range ents {
		if n, ok := parseNodeReportName(e.Name()); ok && e.Type().IsRegular() {
			fs = append(fs, found{filepath.Join(dir, e.Name()), n})
		}
	}
	slices.SortFunc(fs, func(a, b found) int {
		if c := strings.Compare(a.name.stamp, b.name.stamp); c != 0 {
			return c
		}
		if a.name.pid != b.name.pid {
			return a.name.pid - b.name.pid
		}
		return a.name.seq - b.name.seq
	})
	var paths []string
	for _, f := range fs {
		paths = append(paths, f.path)
	}
	return paths
}

// nodeReport is the part of Node.js's report (reportVersion 3 to 5, Node
// 20 writes 4) that readNodeReport takes.
type nodeReport struct {
	Header struct {
		Event     string `json:"event"`
		Trigger   string `json:"trigger"`
		ProcessID int    `json:"processId"`
	} `json:"header"`
	JavascriptStack struct {
		Message string   `json:"message"`
		Stack   []string `json:"stack"`
	} `json:"javascriptStack"`
	JavascriptHeap struct {
		UsedMemory  uint64          `json:"usedMemory"`  // used_heap_size
		MemoryLimit uint64          `json:"memoryLimit"` // heap_size_limit
		HeapSpaces  json.RawMessage `json:"heapSpaces"`
	} `json:"javascriptHeap"`
}

// readNodeReport reads a Node.js diagnostic report. Node writes it in
// place, so an error may only mean it is not all there yet: a prefix of a
// JSON object never parses.
//
// Node 20 gives no JavaScript stack on a heap OOM: its report code does not
// walk the stack of an isolate that is out of memory, and writes "No
// stack." with one frame "Unavailable." (and nothing after "<--- JS
// stacktrace --->" on stderr). A report on a signal has an empty message
// and no frames either, because the signal is handled from the event loop
// with no error to take a stack from. Stack is left empty then; it is
// filled where Node gives frames (a report on an uncaught exception).
func readNodeReport(path string) (*RuntimeReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read a Node.js report: %w", err)
	}
	var nr nodeReport
	if err := json.Unmarshal(b, &nr); err != nil {
		return nil, fmt.Errorf("the Node.js report %q is not whole JSON (still being written?): %w", path, err)
	}
	if nr.Header.ProcessID == 0 || nr.Header.Event == "" {
		return nil, fmt.Errorf("%q is not a Node.js report: no header.processId or header.event", path)
	}
	r := &RuntimeReport{Runtime: "node", Pid: nr.Header.ProcessID, Event: nr.Header.Event,
		HeapLimit: nr.JavascriptHeap.MemoryLimit, HeapUsed: nr.JavascriptHeap.UsedMemory}
	if nr.JavascriptStack.Message != "No stack." {
		for _, f := range nr.JavascriptStack.Stack {
			if f != "Unavailable." {
				r.Stack = append(r.Stack, strings.TrimSpace(f))
			}
		}
	}
	if r.HeapSpaces, err = heapSpaces(nr.JavascriptHeap.HeapSpaces); err != nil {
		return nil, fmt.Errorf("the Node.js report %q: javascriptHeap.heapSpaces: %w", path, err)
	}
	return r, nil
}

// heapSpaces reads javascriptHeap.heapSpaces, an object of V8's spaces,
// in V8's order (read_only_space, new_space, old_space, ...), which a Go
// map would lose. Size is the space's memorySize (V8's space_size).
func heapSpaces(raw json.RawMessage) ([]HeapSpace, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not an object")
	}
	var spaces []HeapSpace
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var s struct {
			MemorySize uint64 `json:"memorySize"`
			Used       uint64 `json:"used"`
		}
		if err := dec.Decode(&s); err != nil {
			return nil, err
		}
		name, _ := t.(string)
		spaces = append(spaces, HeapSpace{Name: name, Size: s.MemorySize, Used: s.Used})
	}
	return spaces, nil
}

// isHeapOOM reports whether the report is of a death by the runtime's
// heap limit: V8's "Allocation failed - JavaScript heap out of memory"
// (trigger OOMError in Node 20, FatalError before), not its "process out
// of memory", which is a failed allocation outside the heap; or the JVM's
// OutOfMemoryError.
func isHeapOOM(r *RuntimeReport) bool {
	switch {
	case r == nil:
		return false
	case r.Runtime == "node":
		return strings.Contains(r.Event, "JavaScript heap out of memory")
	case r.Runtime == "jvm":
		return strings.HasPrefix(r.Event, jvmOOMEvent)
	}
	return false
}

// removeReport removes a report once it is read.
func removeReport(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// requestNodeReport asks a live Node.js process of the group for its
// report, before a graceful restart takes the evidence away. Of pids it
// asks only processes started with this run's report flags (NODE_OPTIONS
// in /proc/PID/environ) that catch reportSignal (SigCgt in
// /proc/PID/status): a shell that inherited NODE_OPTIONS (sh of npm start)
// has no handler. Of those, the largest by RSS. It waits up to timeout for
// the report to be whole: Node handles the signal on its event loop, so a
// process stuck in synchronous JavaScript writes nothing, and nil is
// returned. The report's file is removed after reading, or moved to keep
// when that is not "" (RuntimeReport.File).
func requestNodeReport(dir string, pids []int, timeout time.Duration, keep string) *RuntimeReport {
	top := cgroup.Largest(reportTargets(dir, pids), 1)
	if len(top) == 0 {
		return nil
	}
	pid := top[0].Pid
	before := map[string]bool{}
	for _, p := range nodeReports(dir) {
		before[p] = true
	}
	if err := unix.Kill(pid, reportSignal); err != nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		for _, p := range nodeReports(dir) {
			n, _ := parseNodeReportName(filepath.Base(p))
			if before[p] || n.pid != pid {
				continue
			}
			r, err := readNodeReport(p)
			if err != nil {
				continue
			}
			// A heap OOM that came meanwhile is the death's own
			// report: left for whoever tells the death.
			if r.Event != reportSignalName {
				before[p] = true
				continue
			}
			return keepReport(r, p, keep)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		time.Sleep(min(reportPoll, left))
	}
}

// reportTargets are the processes of pids that can be asked for a report:
// started with this run's report flags, and catching reportSignal now.
func reportTargets(dir string, pids []int) []int {
	var ok []int
	for _, pid := range pids {
		if startedWithReports(pid, dir) && catches(pid, reportSignal) {
			ok = append(ok, pid)
		}
	}
	return ok
}

// keepReport moves the report's file to keep, or removes it when keep is "".
func keepReport(r *RuntimeReport, path, keep string) *RuntimeReport {
	if keep == "" {
		removeReport(path)
		return r
	}
	if err := moveFile(path, keep); err == nil {
		r.File = keep
	}
	return r
}

// moveFile renames, or copies and removes across filesystems (the
// diagnostic directory is in os.TempDir(), keep may not be).
func moveFile(from, to string) error {
	err := os.Rename(from, to)
	if !errors.Is(err, unix.EXDEV) {
		return err
	}
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		os.Remove(to)
		return fmt.Errorf("copy %q to %q: %w", from, to, err)
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return os.Remove(from)
}

// startedWithReports reports whether process pid was started with the
// report flags that point at dir: its environment as it was at exec.
func startedWithReports(pid int, dir string) bool {
	b, err := proc.Environ(pid)
	if err != nil {
		return false
	}
	// The first NODE_OPTIONS is the one getenv(3) gives Node.
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("NODE_OPTIONS=")); ok {
			return bytes.Contains(v, []byte("--report-signal="+reportSignalName)) &&
				bytes.Contains(v, []byte("--report-directory="+nodeQuote(dir)))
		}
	}
	return false
}

// catches reports whether process pid has a handler for sig (SigCgt).
func catches(pid int, sig unix.Signal) bool {
	st, err := proc.ReadStatus(pid)
	return err == nil && st.Catches(sig)
}

// jvmMarkerFlag is the -XX:OnOutOfMemoryError that marks a JVM's heap
// death in dir with its pid. The JVM runs the command with /bin/sh -c and
// waits for it before -XX:+ExitOnOutOfMemoryError exits 3 (checked on Java
// 17: JAVA_TOOL_OPTIONS takes the double-quoted command whole). The JVM
// splits the command at ';' and puts the pid for %p, and the path goes
// to a shell unquoted, so a dir with anything but [A-Za-z0-9/._+-] gets no
// marker, and the death is left to its exit status, 3.
func jvmMarkerFlag(dir string) (string, bool) {
	if dir == "" || strings.IndexFunc(dir, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._+-", r))
	}) >= 0 {
		return "", false
	}
	return `-XX:OnOutOfMemoryError=": > ` + filepath.Join(dir, jvmMarker) + `.%p"`, true
}

// jvmHeapOOM reports a JVM of the run that died of an OutOfMemoryError,
// by the marker its -XX:OnOutOfMemoryError wrote, and removes the marker,
// so a restarted child's death is told on its own. With several, each
// call takes one.
func jvmHeapOOM(dir string) (pid int, ok bool) {
	if dir == "" {
		return 0, false
	}
	ms, _ := filepath.Glob(filepath.Join(dir, jvmMarker+".*"))
	for _, m := range ms {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Ext(m), "."))
		if err != nil {
			continue
		}
		os.Remove(m)
		return pid, true
	}
	return 0, false
}
