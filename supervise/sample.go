package supervise

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"golang.org/x/sys/unix"
)

const (
	growthKeep = 10 * time.Minute // how far back a diagnosis' growth goes
	topN       = 5                // largest processes in a diagnosis
)

// sampler keeps what a diagnosis needs from before an incident: the
// group's usage over the last minutes, and its memory.stat and largest
// processes at the last sample (after an OOM kill the memory is gone, and
// so are the processes). It reads a few small files per sample and wakes
// only when Config.Sample asks it to.
type sampler struct {
	every  time.Duration
	growth []Sample
	top    []cgroup.Proc
	stat   map[string]uint64 // memory.stat at the last sample
}

func (s *sampler) sample(now time.Time, usage uint64, pids []int, stat map[string]uint64) {
	s.stat = stat
	s.record(now, usage)
	s.top = cgroup.Largest(pids, topN)
}

// record keeps the usage for the growth the diagnosis shows.
func (s *sampler) record(now time.Time, usage uint64) {
	keep := int(growthKeep / s.every)
	if len(s.growth) >= keep && keep > 0 {
		s.growth = slices.Delete(s.growth, 0, len(s.growth)-keep+1)
	}
	s.growth = append(s.growth, Sample{Time: now, Usage: usage})
}

// monotonicUsec is the clock /dev/kmsg stamps its records with.
func monotonicUsec() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

// oomReport finds the kernel's report of an OOM kill in the group named
// name, logged after since (kmsg's clock): the "oom-kill:" record names
// the group (task_memcg) and the victim's pid, and the "Killed process
// PID" record that follows has its figures. Without /dev/kmsg (not root,
// or a container without it) there is no report.
//
// The kernel rate-limits the "oom-kill:" summary (dump_header, under
// oom_rs: 10 in 5 s) but never the "Killed process" line: with OOM kills
// in quick succession anywhere on the host the summary can be missing.
// Then a "Killed process" line for one of pids (the child and the
// processes of the last sample) is taken.
func oomReport(name string, since uint64, pids []int) string {
	// The kernel prints "Killed process" after it sends SIGKILL, racing
	// the victim's death on another CPU: guardrun may reap the child
	// before the line is in the buffer. So look again, briefly.
	for range 10 {
		if r, readable := readOOMReport(name, since, pids); r != "" || !readable {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ""
}

func readOOMReport(name string, since uint64, pids []int) (report string, readable bool) {
	// A raw fd: os.File would park a non-blocking read at the end of the
	// buffer in the netpoller, waiting for the next kernel message.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", false
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	victim, fallback := "", ""
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // overwritten while we read: skip ahead
		}
		if err != nil || n <= 0 {
			break // EAGAIN: read to the end
		}
		// "pri,seq,usec,flags;message\n" (Documentation/ABI/testing/dev-kmsg)
		head, msg, ok := strings.Cut(string(buf[:n]), ";")
		if !ok {
			continue
		}
		if fields := strings.Split(head, ","); len(fields) < 3 {
			continue
		} else if usec, _ := strconv.ParseUint(fields[2], 10, 64); usec < since {
			continue
		}
		msg = strings.TrimSpace(strings.SplitN(msg, "\n", 2)[0])
		if rest, ok := strings.CutPrefix(msg, "oom-kill:"); ok && memcgIs(rest, name) {
			victim, report = field(rest, "pid"), ""
		}
		if victim != "" && strings.Contains(msg, "Killed process "+victim+" (") {
			report = msg
		}
		if _, rest, ok := strings.Cut(msg, "Killed process "); ok && victim == "" {
			if pid, err := strconv.Atoi(strings.Fields(rest + " ")[0]); err == nil && slices.Contains(pids, pid) {
				fallback = msg
			}
		}
	}
	if report == "" {
		report = fallback
	}
	return report, true
}

// memcgIs reports whether an oom-kill record's task_memcg is the group.
func memcgIs(rec, name string) bool {
	return strings.HasSuffix(field(rec, "task_memcg"), "/"+name)
}

// field reads key=value out of a comma-separated kernel record.
func field(rec, key string) string {
	for _, kv := range strings.Split(rec, ",") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}
