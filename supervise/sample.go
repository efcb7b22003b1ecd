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

func (s *sampler) sample(now time.Time, st cgroup.Stats, pids []int, stat map[string]uint64) {
	s.stat = stat
	s.record(now, st)
	s.top = cgroup.Largest(pids, topN)
}

// record keeps the usage and working set for the growth the diagnosis
// shows.
func (s *sampler) record(now time.Time, st cgroup.Stats) {
	keep := int(growthKeep / s.every)
	if len(s.growth) >= keep && keep > 0 {
		s.growth = slices.Delete(s.growth, 0, len(s.growth)-keep+1)
	}
	s.growth = append(s.growth, Sample{Time: now, Usage: st.Current, WorkingSet: st.WorkingSet})
}

// monotonicUsec is the clock /dev/kmsg stamps its records with.
func monotonicUsec() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

// oomRecord is the kernel's account of one OOM kill in the group.
type oomRecord struct {
	usec   uint64 // kmsg's timestamp of the "Killed process" line
	line   string
	victim cgroup.Proc
}

// oomRecords finds the kernel's reports of OOM kills in the group named
// name, logged after since (kmsg's clock), oldest first: the "oom-kill:"
// record names the group (task_memcg) and the victim's pid, and the
// "Killed process PID (comm)" line that follows has its figures. Without
// /dev/kmsg (not root, or a container without it) there are none.
//
// The kernel rate-limits the "oom-kill:" summary (dump_header, under
// oom_rs: 10 in 5 s) but never the "Killed process" line: with OOM kills
// in quick succession anywhere on the host the summary can be missing.
// Then a "Killed process" line for one of pids (the child and the
// processes of the last sample) is taken.
//
// The kernel counts the kill in memory.events (and wakes guardrun) a
// moment before it sends SIGKILL and prints the line ("Raise event before
// sending signal", __oom_kill_process), racing guardrun on another CPU:
// so it looks again, briefly, until want records are there.
func oomRecords(name string, since uint64, pids []int, want int) []oomRecord {
	var recs []oomRecord
	for range 10 {
		var readable bool
		if recs, readable = readOOMRecords(name, since, pids); len(recs) >= want || !readable {
			return recs
		}
		time.Sleep(20 * time.Millisecond)
	}
	return recs
}

func readOOMRecords(name string, since uint64, pids []int) (recs []oomRecord, readable bool) {
	// A raw fd: os.File would park a non-blocking read at the end of the
	// buffer in the netpoller, waiting for the next kernel message.
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	victim := ""
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
		fields := strings.Split(head, ",")
		if len(fields) < 3 {
			continue
		}
		usec, _ := strconv.ParseUint(fields[2], 10, 64)
		if usec < since {
			continue
		}
		msg = strings.TrimSpace(strings.SplitN(msg, "\n", 2)[0])
		if rest, ok := strings.CutPrefix(msg, "oom-kill:"); ok {
			victim = ""
			if memcgIs(rest, name) {
				victim = field(rest, "pid")
			}
			continue
		}
		p, ok := killedProcess(msg)
		if !ok {
			continue
		}
		if (victim != "" && strconv.Itoa(p.Pid) == victim) || (victim == "" && slices.Contains(pids, p.Pid)) {
			recs = append(recs, oomRecord{usec: usec, line: msg, victim: p})
		}
		victim = ""
	}
	return recs, true
}

// killedProcess reads the kernel's "Killed process PID (COMM)
// total-vm:NkB, anon-rss:NkB, file-rss:NkB, shmem-rss:NkB, ..." line
// (mm/oom_kill.c); RSS is the three resident figures together.
func killedProcess(msg string) (cgroup.Proc, bool) {
	_, rest, ok := strings.Cut(msg, "Killed process ")
	if !ok {
		return cgroup.Proc{}, false
	}
	pidText, rest, ok := strings.Cut(rest, " (")
	pid, err := strconv.Atoi(pidText)
	if !ok || err != nil {
		return cgroup.Proc{}, false
	}
	i := strings.LastIndex(rest, ") ")
	if i < 0 {
		return cgroup.Proc{}, false
	}
	p := cgroup.Proc{Pid: pid, Command: rest[:i]}
	for _, kv := range strings.Split(rest[i+2:], ", ") {
		k, v, _ := strings.Cut(kv, ":")
		if k == "anon-rss" || k == "file-rss" || k == "shmem-rss" {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(v, "kB"), 10, 64)
			p.RSS += kb << 10
		}
	}
	return p, true
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
