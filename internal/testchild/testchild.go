// Package testchild is the real child process the tests supervise: the
// test binary re-executes itself in one of a few modes (leak, allocate,
// exit, sleep, fork a tree, ignore a signal, ...), so the tests need no
// other program and run the same on the host and inside the VM.
package testchild

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guardrun/guardrun/internal/proc"
)

// Env marks a process as a test child; its value is unused.
const Env = "GUARDRUN_TESTCHILD"

// Command returns argv that runs this test binary as a child in mode.
func Command(mode string, args ...string) []string {
	return append([]string{self(), "-test.run=^$", "--", mode}, args...)
}

func self() string {
	p, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return p
}

// Environ is os.Environ plus the marker that makes the binary a child.
func Environ() []string { return append(os.Environ(), Env+"=1") }

// MaybeRun runs the child and exits when the process is one; tests call it
// first thing in TestMain.
func MaybeRun() {
	if os.Getenv(Env) == "" {
		return
	}
	args := os.Args[1:]
	for len(args) > 0 && args[0] != "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "testchild: no mode")
		os.Exit(2)
	}
	os.Exit(Main(args[1], args[2:]))
}

// Main runs one mode and returns its exit code.
func Main(mode string, args []string) int {
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	switch mode {
	case "exit":
		n, _ := strconv.Atoi(arg(0))
		return n
	case "sleep":
		d, _ := time.ParseDuration(arg(0))
		time.Sleep(d)
		return 0
	case "alloc": // alloc MIB: hold MIB of touched memory, then exit 0
		n, _ := strconv.Atoi(arg(0))
		hold := touch(n << 20)
		fmt.Println("allocated", len(hold)>>20, "MiB")
		return 0
	case "hold": // hold MIB DUR: hold MIB of touched memory for DUR, then exit 0
		n, _ := strconv.Atoi(arg(0))
		d, _ := time.ParseDuration(arg(1))
		hold := touch(n << 20)
		time.Sleep(d)
		runtime.KeepAlive(hold)
		return 0
	case "ramp": // ramp MIB EVERY: map and touch MIB more every EVERY, forever (a steady leak)
		n, _ := strconv.Atoi(arg(0))
		every, _ := time.ParseDuration(arg(1))
		var maps [][]byte
		for {
			b, err := mapTouched(n << 20)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			maps = append(maps, b)
			time.Sleep(every)
		}
	case "leak": // leak MIB: touch MIB more every 10ms until killed
		n, _ := strconv.Atoi(arg(0))
		var held [][]byte
		for {
			held = append(held, touch(n<<20))
			time.Sleep(10 * time.Millisecond)
		}
	case "graceful-leak": // graceful-leak MIB FILE: leak; at TERM write FILE and exit 0
		n, _ := strconv.Atoi(arg(0))
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		var held [][]byte
		for {
			select {
			case <-term:
				writeAtomic(arg(1), fmt.Sprintf("terminated holding %d MiB", len(held)*n))
				return 0
			case <-time.After(10 * time.Millisecond):
				held = append(held, touch(n<<20))
			}
		}
	case "spike": // spike MIB HOLD: grow the group's usage to MIB, hold it for HOLD, give it back, sleep
		// mmap, not the Go heap: munmap returns it at once, and the race
		// detector keeps no shadow of it that would outlive the spike.
		// Growing to a total, read from the group, keeps the overshoot
		// small whatever the child's own baseline is.
		n, _ := strconv.Atoi(arg(0))
		hold, _ := time.ParseDuration(arg(1))
		usage := usageFile()
		var maps [][]byte
		for {
			if b, err := os.ReadFile(usage); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			} else if u, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); u >= uint64(n)<<20 {
				break
			}
			b, err := mapTouched(1 << 20)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			maps = append(maps, b)
		}
		time.Sleep(hold)
		for _, b := range maps {
			syscall.Munmap(b)
		}
		time.Sleep(time.Hour)
		return 0
	case "tree": // tree N PIDFILE: start N grandchildren that sleep, write their pids
		n, _ := strconv.Atoi(arg(0))
		var pids []string
		for range n {
			c := exec.Command(self(), Command("sleep", "1h")[1:]...)
			c.Env = Environ()
			if err := c.Start(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			pids = append(pids, strconv.Itoa(c.Process.Pid))
		}
		writeAtomic(arg(1), strings.Join(pids, "\n"))
		time.Sleep(time.Hour)
		return 0
	case "daemon": // daemon PIDFILE: double-fork a sleeper into its own session and exit
		c := exec.Command(self(), Command("sleep", "1h")[1:]...)
		c.Env = Environ()
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err != nil {
			return 1
		}
		writeAtomic(arg(0), strconv.Itoa(c.Process.Pid))
		return 0
	case "orphan": // orphan PIDFILE: leave a short-lived orphan behind, then sleep
		os.WriteFile(arg(0)+".supervisor", []byte(strconv.Itoa(os.Getppid())), 0o644)
		c := exec.Command(self(), Command("spawn", arg(0))[1:]...)
		c.Env = Environ()
		if err := c.Run(); err != nil {
			return 1
		}
		time.Sleep(time.Hour)
		return 0
	case "spawn": // spawn PIDFILE: start a 1s sleeper, write its pid, exit at once
		c := exec.Command(self(), Command("sleep", "1s")[1:]...)
		c.Env = Environ()
		if err := c.Start(); err != nil {
			return 1
		}
		writeAtomic(arg(0), strconv.Itoa(c.Process.Pid))
		return 0
	case "ignore": // ignore READYFILE: ignore TERM and INT, say so, sleep
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		writeAtomic(arg(0), "ready")
		time.Sleep(time.Hour)
		return 0
	case "signals": // signals FILE: record each signal; exit 0 at TERM
		ch := make(chan os.Signal, 8)
		signal.Notify(ch, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT, syscall.SIGWINCH, syscall.SIGQUIT)
		f, err := os.OpenFile(arg(0), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return 1
		}
		writeAtomic(arg(0)+".ready", "ready")
		for s := range ch {
			fmt.Fprintln(f, s.(syscall.Signal).String())
			if s == syscall.SIGTERM {
				return 0
			}
		}
	case "touch": // touch FILE: prove the child ran
		writeAtomic(arg(0), "ran")
		return 0
	case "sd-ready": // sd-ready DELAY: say READY=1 and a STATUS to $NOTIFY_SOCKET after DELAY, then sleep
		d, _ := time.ParseDuration(arg(0))
		time.Sleep(d)
		c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c.Write([]byte("STATUS=warming up\nREADY=1"))
		c.Close()
		time.Sleep(time.Hour)
		return 0
	case "id": // the credentials the child runs with
		b, _ := os.ReadFile("/proc/self/status")
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Uid:") || strings.HasPrefix(line, "Gid:") || strings.HasPrefix(line, "Groups:") || strings.HasPrefix(line, "CapEff:") {
				fmt.Println(strings.Join(strings.Fields(line), " "))
			}
		}
		return 0
	case "flood": // flood MIB: write MIB of a counting pattern to stdout and stderr at full speed
		n, _ := strconv.Atoi(arg(0))
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i % 251)
		}
		done := make(chan struct{})
		go func() {
			for range n {
				os.Stderr.Write(buf)
			}
			close(done)
		}()
		for range n {
			os.Stdout.Write(buf)
		}
		<-done
		return 0
	case "files": // files DIR MIB READS [FILE]: write MIB of files in DIR, read them back READS times (or for a duration), exit 0
		return files(arg(0), arg(1), arg(2), arg(3))
	case "ready": // ready FILE DUR: write FILE (and .pid, .ppid), then sleep DUR with the default signal dispositions
		d, _ := time.ParseDuration(arg(1))
		writeAtomic(arg(0), "ready")
		time.Sleep(d)
		return 0
	case "prefork": // prefork N MIB FILE: a master whose leaking worker is OOM-killed and started again, N times; then exit 0
		return prefork(arg(0), arg(1), arg(2))
	case "cgroup":
		b, _ := os.ReadFile("/proc/self/cgroup")
		os.Stdout.Write(b)
		return 0
	case "serve-fd": // serve-fd FILE NAMES N: take fd 3 as systemd's socket activation hands it, say so in FILE, serve N HTTP requests, exit 0
		return serveFD(arg(0), arg(1), arg(2))
	case "kill-self": // kill-self SIG
		n, _ := strconv.Atoi(arg(0))
		syscall.Kill(os.Getpid(), syscall.Signal(n))
		time.Sleep(time.Second)
		return 1
	}
	fmt.Fprintln(os.Stderr, "testchild: unknown mode", mode)
	return 2
}

// files is the file-heavy child: a static-file server or a build reading
// node_modules, whose group's usage is mostly page cache and whose working
// set is small. It writes mib MiB as files of up to filesChunk in dir
// (files-000.dat, ...), then reads them all back through the page cache,
// reads times ("3"; "0" only writes) or for a duration ("20s": pass after
// pass, the last cut short when time is up). With progress, it writes that
// file (and .pid, .ppid, see writeAtomic) once the data is written and
// fsynced, "wrote MIB MiB, read 0", and again after each pass: "read 1",
// "read 2", ... The files stay: dir is the caller's, and deleting them
// would drop the cache the test is there to see.
//
// Its anonymous memory is one 1 MiB buffer and the Go runtime's. Each file
// is fsynced, so the cache is clean, as a server's read-mostly files are:
// what the kernel drops at the ceiling without waiting on writeback (v1 has
// no per-group dirty throttling, so a group full of dirty pages can only
// wait at its ceiling). No O_DIRECT: the page cache is the point. dir must
// not be tmpfs, whose pages are shmem, which the working set counts.
func files(dir, mib, reads, progress string) int {
	n, err := strconv.Atoi(mib)
	if err != nil || n <= 0 || dir == "" {
		fmt.Fprintf(os.Stderr, "testchild: files DIR MIB READS [FILE]: got dir %q, MiB %q\n", dir, mib)
		return 2
	}
	passes, errN := strconv.Atoi(reads)
	until, errD := time.ParseDuration(reads)
	if (errN != nil || passes < 0) && (errD != nil || until <= 0) {
		fmt.Fprintf(os.Stderr, "testchild: files: READS %q is neither a count nor a duration\n", reads)
		return 2
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		fmt.Fprintln(os.Stderr, "testchild: files:", err)
		return 1
	} else if fs.Type == tmpfsMagic {
		fmt.Fprintf(os.Stderr, "testchild: files: %s is tmpfs: its pages are shmem, not page cache\n", dir)
		return 2
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i % 251)
	}
	var paths []string
	for left, i := n<<20, 0; left > 0; i++ {
		p := filepath.Join(dir, fmt.Sprintf("files-%03d.dat", i))
		size := min(left, filesChunk)
		if err := writeFile(p, buf, size); err != nil {
			fmt.Fprintln(os.Stderr, "testchild: files:", err)
			return 1
		}
		paths = append(paths, p)
		left -= size
	}
	say := func(read int) {
		if progress != "" {
			writeAtomic(progress, fmt.Sprintf("wrote %d MiB, read %d", n, read))
		}
	}
	say(0)
	deadline := time.Now().Add(until)
	done := 0
	for errN != nil || done < passes {
		for _, p := range paths {
			if err := readFile(p, buf); err != nil {
				fmt.Fprintln(os.Stderr, "testchild: files:", err)
				return 1
			}
			if errN != nil && time.Now().After(deadline) {
				break
			}
		}
		done++
		say(done)
		if errN != nil && time.Now().After(deadline) {
			break
		}
	}
	fmt.Printf("wrote %d MiB, read %d times\n", n, done)
	return 0
}

// filesChunk is the most the files mode puts in one file: a few dozen
// files for a few hundred MiB, as assets or a package tree come.
const filesChunk = 8 << 20

// tmpfsMagic is statfs(2)'s f_type for tmpfs (TMPFS_MAGIC).
const tmpfsMagic = 0x01021994

// writeFile writes size bytes of buf over and over to path, and fsyncs it.
func writeFile(path string, buf []byte, size int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for size > 0 {
		k, err := f.Write(buf[:min(size, len(buf))])
		if err != nil {
			f.Close()
			return err
		}
		size -= k
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readFile reads path to its end through buf.
func readFile(path string, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		if _, err := f.Read(buf); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
	}
}

// usageFile is the memory usage file of the child's own cgroup, v2 or v1.
func usageFile() string {
	b, _ := os.ReadFile("/proc/self/cgroup")
	var v1 string
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" {
			if f := "/sys/fs/cgroup" + parts[2] + "/memory.current"; fileExists(f) {
				return f
			}
		}
		if parts[1] == "memory" {
			v1 = "/sys/fs/cgroup/memory" + parts[2] + "/memory.usage_in_bytes"
		}
	}
	return v1
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func touch(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b
}

// writeAtomic writes path, and beside it path.pid with the child's pid and
// path.ppid with its parent's (guardrun's, when guardrun runs the child),
// so a test can signal or watch either.
// mapTouched maps n bytes outside the Go heap and touches every page, so
// they are charged to the group at once and munmap gives them back at
// once (the race detector keeps no shadow of them either).
func mapTouched(n int) ([]byte, error) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	return b, nil
}

func writeAtomic(path, s string) {
	for ext, pid := range map[string]int{".pid": os.Getpid(), ".ppid": os.Getppid()} {
		os.WriteFile(path+ext+".tmp", []byte(strconv.Itoa(pid)), 0o644)
		os.Rename(path+ext+".tmp", path+ext)
	}
	os.WriteFile(path+".tmp", []byte(s), 0o644)
	os.Rename(path+".tmp", path)
}

// WaitFile waits for a file written by a child, up to a bound.
func WaitFile(t testing.TB, path string) string {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not appear within 10s", path)
	return ""
}

// Alive reports whether pid names a live (not zombie) process.
func Alive(pid int) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// RequireTool returns the path of the first of names found in $PATH: a
// real program a test runs (tmux, Alertmanager, Prometheus). Without it
// the test skips, or fails when GUARDRUN_TEST_REQUIRE=1 on the host, where
// scripts/test installs it; the VM (GUARDRUN_TEST_BACKEND=v2) has no apt,
// and the host run checks what it would.
func RequireTool(t testing.TB, install string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("GUARDRUN_TEST_REQUIRE") == "1" && os.Getenv("GUARDRUN_TEST_BACKEND") != "v2" {
		t.Fatalf("needs %s (%s), and GUARDRUN_TEST_REQUIRE=1 forbids skipping", names[0], install)
	}
	t.Skipf("needs %s (%s)", names[0], install)
	return ""
}

// RequireCgroup skips a test that needs root and a memory cgroup, or fails
// it when GUARDRUN_TEST_REQUIRE=1 (set by .ci/run and the VM), so nothing
// skips silently in CI. want is "v1", "v2" or "" for either.
func RequireCgroup(t testing.TB, have, want string) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "needs root"
	case have == "none":
		why = "needs a memory cgroup (v1 or v2)"
	case want != "" && have != want:
		why = "needs cgroup " + want + "; this host binds memory to " + have
	}
	if why == "" {
		return
	}
	if os.Getenv("GUARDRUN_TEST_REQUIRE") == "1" && (want == "" || os.Getenv("GUARDRUN_TEST_BACKEND") == want) {
		t.Fatalf("%s: %s, and GUARDRUN_TEST_REQUIRE=1 forbids skipping", t.Name(), why)
	}
	t.Skipf("%s: %s", t.Name(), why)
}
