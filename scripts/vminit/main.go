// Command vminit is a tiny PID-1 for the cgroup v2 test VM booted by
// scripts/vmtest. It mounts the pseudo filesystems, enables the memory and
// pids controllers, runs every /tests/*.test binary in turn, prints one
// "VMTEST RESULT" line per binary and a final "VMTEST DONE" line, and powers
// the VM off. Build it with CGO_ENABLED=0; it refuses to run unless it is
// PID 1, so running it on a host by mistake is harmless.
//
// With vmtest.exec=PATH on the kernel command line it runs that one program
// instead of the test binaries (scripts/vmbench's guest script), with the
// words of vmtest.args as its arguments, in its own directory, and reports
// it the same way; vmtest.limit=SECONDS replaces the per-program hardLimit.
// With vmtest.tmpdev=DEV, /tmp is the ext4 on that disk instead of a tmpfs;
// vmtest.env="K=V ..." adds to the environment of what init runs.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// testArgs are passed to every test binary, before any vmtest.* extras.
var testArgs = []string{"-test.v", "-test.count=1", "-test.timeout=420s"}

// hardLimit is how long a test binary may run before init SIGKILLs its
// process group. It is a backstop for a binary that is stuck beyond the
// reach of its own -test.timeout.
const hardLimit = 450 * time.Second

// env is the environment of every program init runs, before vmtest.env's.
// PATH finds the tools scripts/vmtest packs (node and npm in /usr/bin, sh
// and cat in /bin).
var env = []string{
	"PATH=/tests:/bin:/usr/bin",
	"HOME=/tmp",
	"TMPDIR=/tmp",
	"GUARDRUN_TEST_REQUIRE=1",
	"GUARDRUN_TEST_BACKEND=v2",
}

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "vminit: not PID 1; this is the init of the scripts/vmtest VM, refusing to run")
		os.Exit(2)
	}
	// Whatever happens on the main goroutine, end the VM. A panic on any
	// other goroutine kills init, and the kernel panics; panic=-1 on the
	// command line then reboots, which qemu -no-reboot turns into an exit.
	defer func() {
		if r := recover(); r != nil {
			fmt.Printf("VMTEST INIT PANIC: %v\n", r)
		}
		powerOff()
	}()
	cl, err := setup()
	if err != nil {
		fmt.Printf("VMTEST SETUP FAIL: %v\n", err)
		return
	}
	run(cl)
}

func setup() (opts, error) {
	if err := mountAll(); err != nil {
		return opts{}, err
	}
	cl := cmdlineOpts()
	if err := mountTmp(cl.tmpDev); err != nil {
		return cl, err
	}
	// Let child groups of the root use the memory and pids controllers.
	if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+memory +pids"), 0); err != nil {
		return cl, fmt.Errorf("enable controllers: %w", err)
	}
	tmp := "tmpfs"
	if cl.tmpDev != "" {
		tmp = "ext4 on " + cl.tmpDev
	}
	// What the tests start with: the initramfs stays in RAM (as shmem).
	fmt.Printf("vminit: %s; /tmp is %s\n", memSummary(), tmp)
	return cl, loopbackUp()
}

// memSummary is MemTotal, MemAvailable and Shmem from /proc/meminfo.
func memSummary() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "no /proc/meminfo"
	}
	var parts []string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "MemTotal" && k != "MemAvailable" && k != "Shmem") {
			continue
		}
		if kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			parts = append(parts, fmt.Sprintf("%s %d MiB", k, kb>>10))
		}
	}
	return strings.Join(parts, ", ")
}

func mountAll() error {
	mounts := []struct{ fstype, target string }{
		// Without devtmpfs there is no /dev/null, and os/exec fails with
		// "open /dev/null: no such file or directory".
		{"devtmpfs", "/dev"},
		{"proc", "/proc"},
		{"sysfs", "/sys"},
		// /sys/fs/cgroup exists once sysfs is mounted (the kernel creates it
		// as a mount point); MkdirAll is then a no-op.
		{"cgroup2", "/sys/fs/cgroup"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	// The kernel opens /dev/console as fds 0-2 for init only if the rootfs
	// has that node (the built-in initramfs normally provides it). Reopen it
	// from devtmpfs so that our output and Go's crash dumps reach the serial
	// console either way.
	if fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0); err == nil {
		for i := 0; i <= 2; i++ {
			_ = unix.Dup3(fd, i, 0)
		}
		if fd > 2 {
			unix.Close(fd)
		}
	}
	os.Setenv("TMPDIR", "/tmp")
	os.Setenv("HOME", "/tmp")
	os.Setenv("PATH", "/tests:/bin:/usr/bin")
	return nil
}

// tmpDevWait is how long mountTmp waits for the disk's device node: the
// kernel scans an NVMe namespace asynchronously, and devtmpfs makes the
// node only then.
const tmpDevWait = 10 * time.Second

// mountTmp mounts /tmp (TMPDIR, HOME): the ext4 filesystem on dev, a disk
// scripts/vmtest made, so that files written there are page cache as on a
// real host; or, with no dev, a tmpfs, whose pages are shmem.
func mountTmp(dev string) error {
	if err := os.MkdirAll("/tmp", 0o755); err != nil {
		return err
	}
	if dev == "" {
		if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount tmpfs on /tmp: %w", err)
		}
		return nil
	}
	for deadline := time.Now().Add(tmpDevWait); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(dev); err == nil {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("vmtest.tmpdev: %s did not appear within %v: %w", dev, tmpDevWait, err)
		}
	}
	if err := unix.Mount(dev, "/tmp", "ext4", unix.MS_NOSUID, ""); err != nil {
		return fmt.Errorf("mount %s (ext4) on /tmp: %w", dev, err)
	}
	// Like a host's /tmp: anyone may create, only owners remove.
	return unix.Chmod("/tmp", 0o1777)
}

// loopbackUp brings lo up, as an init's network setup would: tests talk to
// real receivers on 127.0.0.1, and the kernel boots with lo down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: up: %w", err)
	}
	return nil
}

func run(cl opts) {
	// SIGCHLD drives the reaper. The channel holds one pending signal and
	// each wake-up drains every zombie, so coalesced signals lose nothing.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGCHLD)

	type job struct {
		name, dir string
		argv      []string
	}
	var jobs []job
	if cl.exec != "" {
		jobs = append(jobs, job{filepath.Base(cl.exec), filepath.Dir(cl.exec), append([]string{cl.exec}, cl.args...)})
	} else {
		bins, _ := filepath.Glob("/tests/*.test")
		for _, bin := range bins {
			if st, err := os.Stat(bin); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
				continue
			}
			name := strings.TrimSuffix(filepath.Base(bin), ".test")
			dir := "/tests"
			if st, err := os.Stat("/tests/" + name + ".d"); err == nil && st.IsDir() {
				dir = "/tests/" + name + ".d"
			}
			argv := append([]string{bin}, testArgs...)
			argv = append(argv, cl.testFlags()...)
			jobs = append(jobs, job{name, dir, argv})
		}
	}
	pass, fail := 0, 0
	for _, j := range jobs {
		start := time.Now()
		code := runProgram(sigc, j.argv, j.dir, append(env[:len(env):len(env)], cl.env...), cl.limit)
		took := time.Since(start).Round(100 * time.Millisecond)
		if code == 0 {
			pass++
			fmt.Printf("VMTEST RESULT %s PASS took=%v\n", j.name, took)
		} else {
			fail++
			fmt.Printf("VMTEST RESULT %s FAIL exit=%d took=%v\n", j.name, code, took)
		}
	}
	reap(0) // collect any orphans left by the last binary
	fmt.Printf("VMTEST DONE pass=%d fail=%d\n", pass, fail)
}

// runProgram runs argv (a test binary and its flags, or vmtest.exec's
// program) in dir with env and returns its exit code (128+signal if it was killed,
// -1 if it could not be started). After limit init kills its process group.
//
// As PID 1 we must reap re-parented orphans with wait4(-1), but wait4(-1)
// would also steal the exit status that os/exec waits for. So we do not use
// os/exec: we fork the binary ourselves and one loop reaps every child,
// picking out the test binary's status by pid.
func runProgram(sigc <-chan os.Signal, argv []string, dir string, env []string, limit time.Duration) int {
	name := filepath.Base(argv[0])
	stdin, err := os.Open("/dev/null")
	if err != nil {
		fmt.Printf("vminit: %v\n", err)
		return -1
	}
	defer stdin.Close()
	fmt.Printf("=== vminit: %s (cwd %s)\n", strings.Join(argv, " "), dir)
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []uintptr{stdin.Fd(), 1, 2},
		// Own process group, so the backstop kill takes its helpers too.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Printf("vminit: start %s: %v\n", argv[0], err)
		return -1
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		if ws, ok := reap(pid); ok {
			switch {
			case ws.Exited():
				return ws.ExitStatus()
			case ws.Signaled():
				return 128 + int(ws.Signal())
			}
			return -1
		}
		select {
		case <-sigc:
		case <-deadline.C:
			fmt.Printf("vminit: %s still running after %v, killing it\n", name, limit)
			_ = unix.Kill(-pid, unix.SIGKILL)
		}
	}
}

// reap collects every exited child without blocking. If one of them is
// want, its status is returned with ok set.
func reap(want int) (status unix.WaitStatus, ok bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return status, ok
		}
		if pid == want {
			status, ok = ws, true
		}
	}
}

// opts is what the kernel command line asks of init.
type opts struct {
	args   []string      // vmtest.args: words, passed on
	run    string        // vmtest.run: -test.run's regex
	exec   string        // vmtest.exec: the one program to run instead of the tests
	limit  time.Duration // vmtest.limit (seconds), else hardLimit
	tmpDev string        // vmtest.tmpdev: the disk with the ext4 for /tmp, else a tmpfs
	env    []string      // vmtest.env: KEY=VALUE words added to the programs' environment
	bad    []string      // parameters with a value that makes no sense, ignored
}

// testFlags is what a test binary gets on top of testArgs.
func (o opts) testFlags() []string {
	extra := o.args
	if o.run != "" {
		extra = append(extra[:len(extra):len(extra)], "-test.run="+o.run)
	}
	return extra
}

// cmdlineOpts reads vmtest.args=..., vmtest.run=REGEX, vmtest.exec=PATH,
// vmtest.limit=SECONDS, vmtest.tmpdev=DEV and vmtest.env="K=V ..." from
// the kernel command line. The kernel ignores
// unknown parameters that contain a dot (it takes them for module
// parameters) instead of passing them to init, so we read /proc/cmdline.
func cmdlineOpts() opts {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return opts{limit: hardLimit}
	}
	o := parseCmdline(string(b))
	for _, p := range o.bad {
		fmt.Printf("vminit: ignoring %s: it makes no sense\n", p)
	}
	return o
}

// parseCmdline is cmdlineOpts on the text of /proc/cmdline. A value may be
// quoted: vmtest.args="-test.short -test.failfast" gives two arguments.
func parseCmdline(s string) opts {
	o := opts{limit: hardLimit}
	for _, p := range splitCmdline(s) {
		switch k, v, _ := strings.Cut(p, "="); k {
		case "vmtest.args":
			o.args = append(o.args, strings.Fields(v)...)
		case "vmtest.run":
			o.run = v
		case "vmtest.exec":
			o.exec = v
		case "vmtest.tmpdev":
			o.tmpDev = v
		case "vmtest.env":
			for _, kv := range strings.Fields(v) {
				if k, _, ok := strings.Cut(kv, "="); ok && k != "" {
					o.env = append(o.env, kv)
				} else {
					o.bad = append(o.bad, "vmtest.env word "+kv)
				}
			}
		case "vmtest.limit":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				o.limit = time.Duration(n) * time.Second
			} else {
				o.bad = append(o.bad, p)
			}
		}
	}
	return o
}

// splitCmdline splits on whitespace outside double quotes and drops the
// quotes, as the kernel does.
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

func powerOff() {
	unix.Sync()
	// With qemu -no-reboot this makes qemu exit with status 0.
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Still here: returning from main makes init exit, so the kernel panics
	// and panic=-1 ends the VM anyway.
	fmt.Printf("vminit: power off: %v\n", err)
}
