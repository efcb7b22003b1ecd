// Command vminit is a tiny PID-1 for the cgroup v2 test VM booted by
// scripts/vmtest. It mounts the pseudo filesystems, enables the memory and
// pids controllers, runs every /tests/*.test binary in turn, prints one
// "VMTEST RESULT" line per binary and a final "VMTEST DONE" line, and powers
// the VM off. Build it with CGO_ENABLED=0; it refuses to run unless it is
// PID 1, so running it on a host by mistake is harmless.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// testArgs are passed to every test binary, before any vmtest.* extras.
var testArgs = []string{"-test.v", "-test.count=1", "-test.timeout=240s"}

// hardLimit is how long a test binary may run before init SIGKILLs its
// process group. It is a backstop for a binary that is stuck beyond the
// reach of its own -test.timeout.
const hardLimit = 270 * time.Second

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
	if err := setup(); err != nil {
		fmt.Printf("VMTEST SETUP FAIL: %v\n", err)
		return
	}
	run()
}

func setup() error {
	mounts := []struct{ fstype, target string }{
		// Without devtmpfs there is no /dev/null, and os/exec fails with
		// "open /dev/null: no such file or directory".
		{"devtmpfs", "/dev"},
		{"proc", "/proc"},
		{"sysfs", "/sys"},
		// /sys/fs/cgroup exists once sysfs is mounted (the kernel creates it
		// as a mount point); MkdirAll is then a no-op.
		{"cgroup2", "/sys/fs/cgroup"},
		{"tmpfs", "/tmp"},
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
	// Let child groups of the root use the memory and pids controllers.
	if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+memory +pids"), 0); err != nil {
		return fmt.Errorf("enable controllers: %w", err)
	}
	return loopbackUp()
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

func run() {
	// SIGCHLD drives the reaper. The channel holds one pending signal and
	// each wake-up drains every zombie, so coalesced signals lose nothing.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGCHLD)

	extra := cmdlineArgs()
	bins, _ := filepath.Glob("/tests/*.test")
	pass, fail := 0, 0
	for _, bin := range bins {
		if st, err := os.Stat(bin); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(bin), ".test")
		code := runTest(sigc, bin, name, extra)
		if code == 0 {
			pass++
			fmt.Printf("VMTEST RESULT %s PASS\n", name)
		} else {
			fail++
			fmt.Printf("VMTEST RESULT %s FAIL exit=%d\n", name, code)
		}
	}
	reap(0) // collect any orphans left by the last binary
	fmt.Printf("VMTEST DONE pass=%d fail=%d\n", pass, fail)
}

// runTest runs one test binary and returns its exit code (128+signal if it
// was killed, -1 if it could not be started).
//
// As PID 1 we must reap re-parented orphans with wait4(-1), but wait4(-1)
// would also steal the exit status that os/exec waits for. So we do not use
// os/exec: we fork the binary ourselves and one loop reaps every child,
// picking out the test binary's status by pid.
func runTest(sigc <-chan os.Signal, bin, name string, extra []string) int {
	dir := "/tests"
	if st, err := os.Stat("/tests/" + name + ".d"); err == nil && st.IsDir() {
		dir = "/tests/" + name + ".d"
	}
	stdin, err := os.Open("/dev/null")
	if err != nil {
		fmt.Printf("vminit: %v\n", err)
		return -1
	}
	defer stdin.Close()
	argv := append([]string{bin}, testArgs...)
	argv = append(argv, extra...)
	fmt.Printf("=== vminit: %s (cwd %s)\n", strings.Join(argv, " "), dir)
	pid, err := syscall.ForkExec(bin, argv, &syscall.ProcAttr{
		Dir: dir,
		Env: []string{
			"PATH=/tests:/bin:/usr/bin",
			"HOME=/tmp",
			"TMPDIR=/tmp",
			"GUARDRUN_TEST_REQUIRE=1",
			"GUARDRUN_TEST_BACKEND=v2",
		},
		Files: []uintptr{stdin.Fd(), 1, 2},
		// Own process group, so the backstop kill takes its helpers too.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Printf("vminit: start %s: %v\n", bin, err)
		return -1
	}
	deadline := time.NewTimer(hardLimit)
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
			fmt.Printf("vminit: %s still running after %v, killing it\n", name, hardLimit)
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

// cmdlineArgs turns vmtest.args=... and vmtest.run=REGEX from the kernel
// command line into extra test flags. The kernel ignores unknown parameters
// that contain a dot (it takes them for module parameters) instead of
// passing them to init, so we read /proc/cmdline. A value may be quoted:
// vmtest.args="-test.short -test.failfast" gives two arguments.
func cmdlineArgs() []string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil
	}
	var extra []string
	for _, p := range splitCmdline(string(b)) {
		switch k, v, _ := strings.Cut(p, "="); k {
		case "vmtest.args":
			extra = append(extra, strings.Fields(v)...)
		case "vmtest.run":
			extra = append(extra, "-test.run="+v)
		}
	}
	return extra
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
