// Package proc reads the figures guardrun takes from procfs (proc(5)):
// a process's stat and status, its children and its open fds, and the
// host's meminfo and boot time. It is the only parser of those files in
// guardrun; what the numbers mean for a ceiling, a report or a metric is
// left to the packages that use them. Its ReadFile and WriteFile are how
// guardrun reads and writes any kernel file, cgroupfs's included.
//
// Each read goes into a buffer on the stack and is parsed in place, so a
// ReadStat allocates only its path (and the NUL-terminated copy open(2)
// takes) and Comm: the none backend calls it for every process of the
// child's tree ten times a second.
package proc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ClockTicks is USER_HZ, the unit of stat's times: fixed at 100 by the
// kernel ABI on Linux whatever CONFIG_HZ is (sysconf(_SC_CLK_TCK)).
const ClockTicks = 100

// Stat is /proc/PID/stat, the fields guardrun reads.
type Stat struct {
	Pid, PPid     int
	PGrp, Session int    // fields 5 and 6: process group and session ids
	Comm          string // without the parentheses; may contain spaces and ')'
	State         byte
	UTime, STime  uint64 // clock ticks (ClockTicks a second)
	Threads       int    // field 20
	StartTime     uint64 // clock ticks since boot (field 22)
	VSize         uint64 // bytes
	RSS           uint64 // bytes (field 24 pages * page size)
	ExitCode      int    // field 52, where the kernel has it: see KilledBy
}

// statMax bounds a stat line: 52 fields of at most 20 digits, and a comm
// of at most 64 bytes (a kernel thread's name; a task's is 16).
const statMax = 2048

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (Stat, error) {
	path := pidPath(pid, "stat")
	var buf [statMax]byte
	b, err := ReadFile(path, buf[:])
	if err != nil {
		return Stat{}, err
	}
	s, err := parseStat(b, uint64(os.Getpagesize()))
	if err != nil {
		return Stat{}, fmt.Errorf("parse %s: %w", path, err)
	}
	return s, nil
}

// parseStat parses a stat line. comm (field 2) is whatever the process
// named itself, spaces and parentheses included, so it is taken up to the
// last ')' of the line: no later field can hold one.
func parseStat(b []byte, page uint64) (Stat, error) {
	open, shut := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || shut < open {
		return Stat{}, errors.New("no (comm)")
	}
	pid, ok := atou(bytes.TrimSpace(b[:open]))
	if !ok {
		return Stat{}, fmt.Errorf("pid %q", string(bytes.TrimSpace(b[:open])))
	}
	s := Stat{Pid: int(pid), Comm: string(b[open+1 : shut])}
	rest := b[shut+1:]
	var f []byte
	for n := 3; n <= 52; n++ {
		if f, rest = field(rest); f == nil {
			if n > 24 {
				break // an older kernel's line: the rest are not there
			}
			return Stat{}, fmt.Errorf("%d fields, want at least 24", n-1)
		}
		if n == 3 {
			s.State = f[0]
			continue
		}
		v, ok := atou(f)
		switch n {
		case 4:
			s.PPid = int(v)
		case 5:
			s.PGrp = int(v)
		case 6:
			s.Session = int(v)
		case 14:
			s.UTime = v
		case 15:
			s.STime = v
		case 20:
			s.Threads = int(v)
		case 22:
			s.StartTime = v
		case 23:
			s.VSize = v
		case 24:
			s.RSS = v * page
		case 52:
			s.ExitCode = int(v)
		default:
			continue // a field not read, some of which may be negative
		}
		if !ok {
			return Stat{}, fmt.Errorf("field %d %q", n, string(f))
		}
	}
	return s, nil
}

// KilledBy reports whether the process is dying of signal sig, or died of
// it and is not reaped yet: its exit status, in wait(2)'s form, is the
// signal's (field 52, from Linux 3.5; 0 while the process lives, and 0 to
// a reader not allowed to trace it).
func (s Stat) KilledBy(sig unix.Signal) bool { return sig > 0 && s.ExitCode&0x7f == int(sig) }

// Children are the pids whose parent is pid, from
// /proc/PID/task/*/children (CONFIG_PROC_CHILDREN). A child is listed
// under the thread that forked it, so every thread's file is read: a Go
// program forks from whichever thread it is on.
func Children(pid int) ([]int, error) {
	dir := numPath("/proc/", pid, "/task/")
	var kids []int
	var buf [1024]byte
	err := eachNumber(dir, func(tid int) error {
		b, err := ReadFile(numPath(dir, tid, "/children"), buf[:])
		if errors.Is(err, fs.ErrNotExist) {
			return nil // the thread ended: its children moved to another
		}
		for len(b) > 0 {
			var f []byte
			if f, b = field(b); f == nil {
				break
			}
			if v, ok := atou(f); ok {
				kids = append(kids, int(v))
			}
		}
		return err
	})
	return kids, err
}

// Tree is pid and all its descendants, walking Children, pid first and
// each parent before its children; pids that vanish meanwhile are
// skipped, and a vanished pid's orphans with it: they went to a reaper,
// outside pid's tree. Any other error, or pid itself gone, fails the
// walk. Its cost is the tree's, not the host's: it reads no other
// process's files.
func Tree(pid int) ([]int, error) {
	kids, err := Children(pid)
	if err != nil {
		return nil, err
	}
	tree := append(make([]int, 0, 1+len(kids)), pid)
	tree = append(tree, kids...)
	// w <= i: the walk keeps the pids it could read in place, and appends
	// their children past i.
	w := 1
	for i := 1; i < len(tree); i++ {
		kids, err := Children(tree[i])
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		tree[w] = tree[i]
		w++
		tree = append(tree, kids...)
	}
	return tree[:w], nil
}

// Status is /proc/PID/status's memory lines, in bytes. A kernel thread
// has none of them: all zero.
type Status struct {
	VmRSS, RssAnon, RssFile, RssShmem uint64
	// SigCgt is the mask of the signals the process catches, bit N-1 for
	// signal N (proc(5)); SigPnd and ShdPnd those pending for its main
	// thread and for the whole process.
	SigCgt, SigPnd, ShdPnd uint64
}

// Catches reports whether the process has a handler for signal sig.
func (s Status) Catches(sig unix.Signal) bool { return hasSignal(s.SigCgt, sig) }

// Pending reports whether signal sig is sent to the process and not yet
// taken: a SIGKILL is pending until the process takes it on its way out,
// and then its exit status says it (Stat.KilledBy).
func (s Status) Pending(sig unix.Signal) bool {
	return hasSignal(s.SigPnd, sig) || hasSignal(s.ShdPnd, sig)
}

func hasSignal(mask uint64, sig unix.Signal) bool { return sig > 0 && mask&(1<<(uint(sig)-1)) != 0 }

// ReadStatus reads /proc/PID/status.
func ReadStatus(pid int) (Status, error) {
	var s Status
	path := pidPath(pid, "status")
	_, err := readKB(path,
		[]string{"VmRSS", "RssAnon", "RssFile", "RssShmem"},
		[]*uint64{&s.VmRSS, &s.RssAnon, &s.RssFile, &s.RssShmem},
		func(key, rest []byte) error {
			var mask *uint64
			switch string(key) {
			case "SigCgt":
				mask = &s.SigCgt
			case "SigPnd":
				mask = &s.SigPnd
			case "ShdPnd":
				mask = &s.ShdPnd
			default:
				return nil
			}
			v, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 16, 64)
			if err != nil {
				return fmt.Errorf("parse %s: %s %q", path, key, string(bytes.TrimSpace(rest)))
			}
			*mask = v
			return nil
		})
	return s, err
}

// Environ is /proc/PID/environ: the environment the process was started
// with, NUL-separated, as exec gave it.
func Environ(pid int) ([]byte, error) {
	return ReadFile(pidPath(pid, "environ"), make([]byte, 4096))
}

// MemInfo is /proc/meminfo's figures guardrun reads, in bytes.
type MemInfo struct{ Total, Free, Available, SwapTotal, SwapFree uint64 }

// ReadMemInfo reads /proc/meminfo. Available is the kernel's MemAvailable,
// its estimate of what a new workload can have without swapping. Kernels
// before 3.14 have no such line; Available is then MemFree + Cached +
// SReclaimable, the estimate gopsutil fell back to.
func ReadMemInfo() (MemInfo, error) { return readMemInfo("/proc/meminfo") }

func readMemInfo(path string) (MemInfo, error) {
	var m MemInfo
	var cached, slab uint64
	found, err := readKB(path,
		[]string{"MemAvailable", "MemTotal", "MemFree", "SwapTotal", "SwapFree", "Cached", "SReclaimable"},
		[]*uint64{&m.Available, &m.Total, &m.Free, &m.SwapTotal, &m.SwapFree, &cached, &slab})
	if err == nil && found&1 == 0 {
		m.Available = m.Free + cached + slab
	}
	return m, err
}

// BootTime is /proc/stat's btime: the time of boot, to the second.
func BootTime() (time.Time, error) { return bootTime("/proc/stat") }

func bootTime(path string) (time.Time, error) {
	// The per-CPU and intr lines come first and grow with the machine:
	// tens of KiB on a large one. ReadFile grows the buffer to fit.
	var buf [8192]byte
	b, err := ReadFile(path, buf[:])
	if err != nil {
		return time.Time{}, err
	}
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			if s, ok := atou(bytes.TrimSpace(v)); ok {
				return time.Unix(int64(s), 0), nil
			}
			return time.Time{}, fmt.Errorf("parse %s: btime %q", path, string(v))
		}
	}
	return time.Time{}, fmt.Errorf("parse %s: no btime line", path)
}

// FDs counts /proc/PID/fd entries: the process's open file descriptors.
func FDs(pid int) (int, error) {
	n := 0
	err := eachNumber(pidPath(pid, "fd"), func(int) error { n++; return nil })
	return n, err
}

func pidPath(pid int, file string) string { return numPath("/proc/", pid, "/"+file) }

// numPath is dir, n and file in one string, of one allocation: strconv.Itoa
// would make a second for any n past 99.
func numPath(dir string, n int, file string) string {
	var b [64]byte
	p := append(b[:0], dir...)
	p = strconv.AppendInt(p, int64(n), 10)
	return string(append(p, file...))
}

// ReadFile reads a kernel file (procfs, cgroupfs, sysfs) whole into buf,
// growing it only when the file does not fit. It is guardrun's one way to
// read such a file: open, read, close and nothing else, where
// os.ReadFile also stats the file and offers it to the netpoller (a
// cgroup file: 6.5 µs against 17 µs, measured). procfs and cgroupfs hand
// a file out through seq_file, which may return less than asked before
// the end: only a read of 0 is the end. The error is an *fs.PathError.
func ReadFile(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, pathError("open", path, err)
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf))...)
		}
		m, err := unix.Read(fd, buf[n:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, pathError("read", path, err)
		case m == 0:
			return buf[:n], nil
		}
		n += m
	}
}

// WriteFile writes b to an existing kernel file in one write(2), as
// cgroupfs takes a value: open, write, close, no O_CREAT or O_TRUNC. The
// error is an *fs.PathError.
func WriteFile(path string, b []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pathError("open", path, err)
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Write(fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return pathError("write", path, err)
		case n < len(b):
			return pathError("write", path, unix.EIO)
		}
		return nil
	}
}

// eachNumber calls fn with each entry of directory path that is a
// number (a pid, a tid, an fd), read with getdents64 into a buffer on the
// stack: a directory of procfs is listed without a string per entry.
func eachNumber(path string, fn func(n int) error) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pathError("open", path, err)
	}
	defer unix.Close(fd)
	var buf [4096]byte
	for {
		n, err := unix.Getdents(fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return pathError("getdents", path, err)
		}
		if n == 0 {
			return nil
		}
		// struct linux_dirent64 (getdents(2)): d_ino and d_off (8 bytes
		// each), d_reclen (2), d_type (1), then the NUL-terminated name.
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return pathError("getdents", path, errors.New("malformed dirent"))
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			b = b[reclen:]
			if v, ok := atou(name); ok {
				if err := fn(int(v)); err != nil {
					return err
				}
			}
		}
	}
}

// readKB reads the "Key:  N kB" lines of path (status, meminfo): the
// figure of keys[i], in bytes, goes to *into[i], and bit i of found says
// it was there.
func readKB(path string, keys []string, into []*uint64, other ...func(key, rest []byte) error) (found uint64, err error) {
	var buf [4096]byte
	b, err := ReadFile(path, buf[:])
	if err != nil {
		return 0, err
	}
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		key, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		for _, f := range other {
			if err := f(key, rest); err != nil {
				return found, err
			}
		}
		for i, k := range keys {
			if string(key) != k {
				continue
			}
			num, unit := field(rest)
			if unit, _ = field(unit); string(unit) != "kB" {
				return found, fmt.Errorf("parse %s: %s %q: not in kB", path, k, string(bytes.TrimSpace(rest)))
			}
			v, ok := atou(num)
			if !ok {
				return found, fmt.Errorf("parse %s: %s %q", path, k, string(num))
			}
			*into[i], found = v<<10, found|1<<i
		}
	}
	return found, nil
}

// field splits the first space-separated field off b; nil at the end.
func field(b []byte) (f, rest []byte) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	j := i
	for j < len(b) && !isSpace(b[j]) {
		j++
	}
	if i == j {
		return nil, nil
	}
	return b[i:j], b[j:]
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' }

// atou parses a decimal uint64, refusing a sign, a blank and an overflow.
func atou(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' || v > (1<<64-1-uint64(c-'0'))/10 {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// pathError wraps a read's error with its path. A process reaped between
// open and read fails the read with ESRCH; it is as gone as one never
// there, so ESRCH becomes ENOENT and callers test one thing,
// errors.Is(err, fs.ErrNotExist).
func pathError(op, path string, err error) error {
	if err == unix.ESRCH {
		err = unix.ENOENT
	}
	return &fs.PathError{Op: op, Path: path, Err: err}
}

// OOMScoreAdj reads /proc/PID/oom_score_adj (-1000 to 1000).
func OOMScoreAdj(pid int) (int, error) {
	path := pidPath(pid, "oom_score_adj")
	var buf [16]byte
	b, err := ReadFile(path, buf[:])
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return v, nil
}

// SetOOMScoreAdj writes /proc/PID/oom_score_adj. Lowering a score below
// the lowest one a privileged process set takes CAP_SYS_RESOURCE;
// raising it does not.
func SetOOMScoreAdj(pid, v int) error {
	return WriteFile(pidPath(pid, "oom_score_adj"), strconv.AppendInt(nil, int64(v), 10))
}
