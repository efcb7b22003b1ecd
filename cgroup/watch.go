package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Notice is what a Watcher reports.
type Notice int

const (
	// Threshold: the group's working set (see WorkingSet) reached
	// WatchSpec.Threshold. Edge-triggered: one notice per upward
	// crossing; the next comes only after the working set fell under the
	// threshold and rose past it again.
	Threshold Notice = iota
	// Pressure: the group's PSI trigger on memory.pressure fired (v2).
	Pressure
	// OOMKill: the group's oom_kill counter rose: the kernel's OOM killer
	// (none: the sampler) killed a process in it. Read Stats for how many.
	OOMKill

	numNotices = int(OOMKill) + 1
)

func (n Notice) String() string {
	switch n {
	case Pressure:
		return "pressure"
	case OOMKill:
		return "oom_kill"
	}
	return "threshold"
}

// WatchSpec is what to watch for.
type WatchSpec struct {
	Threshold uint64 // bytes of working set; 0 for none
	// Trigger is a PSI trigger for memory.pressure, in the kernel's own
	// form ("some 100000 1000000": 100 ms stalled in any 1 s), "" for none.
	Trigger string
	// OOM asks for an OOMKill notice each time the kernel kills a process
	// in the group, while the child lives.
	OOM bool
}

// Kernel file of the v1 memory controller that registers eventfds.
const v1EventControl = "cgroup.event_control"

// registerEvent asks the v1 memory group dir to signal a new eventfd on
// an event of its file control (memory.usage_in_bytes crossing the
// threshold arg, memory.oom_control entering OOM with arg ""): it writes
// "<eventfd> <fd of control>[ <arg>]" to cgroup.event_control
// (Documentation/admin-guide/cgroup-v1/memory.rst, "Memory thresholds"
// and "OOM Control"). The control file may be closed afterwards; the
// registration lasts until the eventfd is closed or the group removed.
// The eventfd is non-blocking: the watcher drains it after each poll.
func registerEvent(dir, control, arg string) (int, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("eventfd: %w", err)
	}
	cf, err := os.Open(filepath.Join(dir, control))
	if err != nil {
		unix.Close(efd)
		return -1, err
	}
	defer cf.Close()
	line := strconv.Itoa(efd) + " " + strconv.Itoa(int(cf.Fd()))
	if arg != "" {
		line += " " + arg
	}
	if err := writeFile(filepath.Join(dir, v1EventControl), line); err != nil {
		unix.Close(efd)
		return -1, err
	}
	return efd, nil
}

// The threshold poll. v2 has no event for usage crossing a figure (only
// memory.high, which throttles the group, so it is no tripwire), and on
// v1 page cache can hold raw usage over the threshold while the working
// set is under it, where the usage eventfd stays quiet. There the
// watcher reads the group again after
//
//	clamp(distance to the threshold / leakRate, pollMin, pollMax)
//
// where the distance is from the last figure read: raw usage while it
// is under the threshold (the working set is never above it), the
// working set otherwise. A leak slower than leakRate cannot cross
// before the next read, and the reads close in as it nears: it is seen
// within pollMin of crossing. An idle service far under the threshold
// costs about one small read a second (measured on this host's v1, open
// to close: memory.usage_in_bytes 20-25 µs; memory.stat, read only with
// raw usage over the threshold, 35-45 µs). A faster leak is late by at
// most one interval, and the ceiling, which the kernel enforces itself,
// still holds.
const (
	leakRate = 256 << 20 // bytes per second
	pollMin  = 10 * time.Millisecond
	pollMax  = time.Second
)

// pollWait is how long to wait with distance bytes to the threshold.
func pollWait(distance uint64) time.Duration {
	if far := uint64(leakRate * pollMax / time.Second); distance >= far {
		return pollMax
	}
	return max(pollMin, time.Duration(distance*uint64(time.Second)/leakRate))
}

// oomSettle is how long after a v1 OOM event the watcher looks for the
// oom_kill counter to rise. The memory.oom_control eventfd fires as the
// group enters OOM (memcg1_oom_prepare), before a victim is chosen and
// counted. Measured on this host (Linux 6.18, a parent forking leaking
// workers, TestWatchOOMKillOfAWorker): one signal per kill; about half
// the reads at the wake-up still showed the old count, and the rise came
// 3-60 ms after the signal (found by the first or second look after).
// The kernel may also end an OOM without a kill (the victim was already
// exiting), so the looking must end: from pollMin, doubling to pollMax,
// for oomSettle.
const oomSettle = 10 * time.Second

// never is a watch's "wait for the kernel alone".
const never time.Duration = -1

// A watch is one thing a Watcher waits for: an fd the kernel wakes, a
// figure it must poll, or both.
type watch struct {
	fd     int           // -1: nothing for the kernel to wake
	events int16         // POLLIN, or POLLPRI for a PSI trigger
	first  time.Duration // when to check first without a wake-up (never: wait for fd)
	// check reads the group after the kernel woke fd (woke) or the wait
	// it asked for ran out, sends what it found, and says how long to
	// wait before it looks again on its own (never: until fd wakes).
	check func(woke bool) time.Duration
}

// Watcher delivers notices from the kernel: a goroutine sleeps in
// poll(2) until the kernel wakes one of its fds or a watch's own wait
// runs out (see the threshold poll).
type Watcher struct {
	C       <-chan Notice
	notes   chan Notice
	mu      sync.Mutex // serialises send
	watches []watch
	stop    func()        // none: detach from the sampler
	wake    [2]int        // a pipe that ends the poll
	done    chan struct{} // closed when loop returns; nil if none runs
	once    sync.Once

	// For tests: working-set reads, and poll wake-ups handled.
	looks, wakes atomic.Uint64
}

func newWatcher() *Watcher {
	w := &Watcher{notes: make(chan Notice, numNotices)}
	w.C = w.notes
	return w
}

// add takes fd (when >= 0) into the watcher's care at once, so that an
// error later in Watch closes it.
func (w *Watcher) add(x watch) { w.watches = append(w.watches, x) }

// fail closes what Watch opened so far and returns err. No goroutine
// has started yet.
func (w *Watcher) fail(err error) (*Watcher, error) {
	w.closeFds()
	return nil, err
}

func (w *Watcher) closeFds() {
	for _, x := range w.watches {
		if x.fd >= 0 {
			unix.Close(x.fd)
		}
	}
	w.watches = nil
}

// start runs the loop when there is anything to wait on; the none
// backend's watcher is fed by its sampler and needs none.
func (w *Watcher) start() (*Watcher, error) {
	if len(w.watches) == 0 {
		return w, nil
	}
	if err := unix.Pipe2(w.wake[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return w.fail(fmt.Errorf("watcher pipe: %w", err))
	}
	w.done = make(chan struct{})
	go w.loop()
	return w, nil
}

// send never blocks the watch. The channel holds one notice per kind;
// when it is full, what is pending is folded to one of each kind, so a
// notice is dropped only while one of its kind waits to be read, and
// the reader's Stats after that one still show what the dropped one was
// about (oom_kill only rises). The order of what is pending may change.
func (w *Watcher) send(n Notice) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case w.notes <- n:
		return
	default:
	}
	var pending [numNotices]bool
	pending[n] = true
	for empty := false; !empty; {
		select {
		case p := <-w.notes:
			pending[p] = true
		default:
			empty = true
		}
	}
	for k, p := range pending {
		if p {
			// Cannot block: the channel was empty, it holds one of
			// each kind, and only send (under mu) fills it.
			w.notes <- Notice(k)
		}
	}
}

// Close stops the watcher and frees its descriptors. It returns once
// the watcher's goroutine is gone. Safe to call twice and on a nil
// Watcher.
func (w *Watcher) Close() {
	if w == nil {
		return
	}
	w.once.Do(func() {
		if w.stop != nil {
			w.stop()
		}
		if w.done != nil {
			unix.Write(w.wake[1], []byte{0})
			<-w.done
			unix.Close(w.wake[0])
			unix.Close(w.wake[1])
		}
		w.closeFds()
	})
}

// loop waits in poll(2) for the watches' fds and the soonest wait any
// watch asked for, and runs the checks that are due, until Close.
func (w *Watcher) loop() {
	defer close(w.done)
	pfds := make([]unix.PollFd, len(w.watches)+1)
	due := make([]time.Time, len(w.watches)) // zero: wait for the kernel alone
	now := time.Now()
	for i, x := range w.watches {
		pfds[i] = unix.PollFd{Fd: int32(x.fd), Events: x.events}
		due[i] = after(now, x.first)
	}
	pfds[len(w.watches)] = unix.PollFd{Fd: int32(w.wake[0]), Events: unix.POLLIN}
	for {
		timeout := -1
		for _, d := range due {
			if !d.IsZero() {
				ms := int((time.Until(d) + time.Millisecond - 1) / time.Millisecond)
				if timeout < 0 || ms < timeout {
					timeout = max(ms, 0)
				}
			}
		}
		_, err := unix.Poll(pfds, timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pfds[len(w.watches)].Revents != 0 {
			return
		}
		now = time.Now()
		for i, x := range w.watches {
			r := pfds[i].Revents
			if r&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
				// The file is gone with its group: a removed cgroup's
				// PSI trigger polls POLLERR|POLLPRI for ever after
				// (kernfs_fop_poll). The fd will not say more.
				pfds[i].Fd, r = -1, 0
			}
			if woke := r&x.events != 0; woke || !due[i].IsZero() && !now.Before(due[i]) {
				due[i] = after(now, x.check(woke))
			}
		}
		w.wakes.Add(1)
	}
}

func after(now time.Time, d time.Duration) time.Time {
	if d < 0 {
		return time.Time{}
	}
	return now.Add(d)
}

// crossing follows a group's working set across the threshold.
type crossing struct {
	w           *Watcher
	threshold   uint64
	backend     string
	usage, stat string // memory.current or memory.usage_in_bytes; memory.stat
	rawEvent    bool   // v1: the kernel's eventfd says when raw usage crosses
	over        bool   // the working set was at or over the threshold
}

// look reads the group, sends Threshold when the working set crossed
// upward, and says when to look again. Raw usage is read first: it is
// one number, and the working set is never above it, so memory.stat is
// read only when raw usage is over the threshold.
func (c *crossing) look() time.Duration {
	raw, err := readUint(c.usage)
	if err != nil {
		return lookFailed(err)
	}
	if raw < c.threshold {
		c.over = false
		if c.rawEvent {
			return never
		}
		return pollWait(c.threshold - raw)
	}
	stat, err := readStat(c.stat)
	if err != nil {
		return lookFailed(err)
	}
	c.w.looks.Add(1)
	ws, _ := WorkingSet(c.backend, raw, stat)
	if ws < c.threshold {
		c.over = false
		return pollWait(c.threshold - ws)
	}
	if !c.over {
		c.over = true
		c.w.send(Threshold)
	}
	// Still looking while over: the working set may fall under the
	// threshold while page cache holds raw usage up, and cross again.
	return pollWait(ws - c.threshold)
}

// lookFailed: a group that is gone has nothing more to say; any other
// error is tried again, seldom.
func lookFailed(err error) time.Duration {
	if errors.Is(err, fs.ErrNotExist) {
		return never
	}
	return pollMax
}

// drain empties a non-blocking eventfd or inotify fd.
func drain(fd int) {
	buf := make([]byte, 4096)
	for i := 0; i < 64; i++ {
		if n, _ := unix.Read(fd, buf); n <= 0 {
			return
		}
	}
}

// Watch on v2:
//   - Threshold: polls memory.current at the threshold poll's interval;
//     once it is over the threshold, reads memory.stat for the working
//     set. The kernel's only usage event is memory.high, and memory.high
//     is not a tripwire: above it the kernel reclaims and throttles the
//     group, so a threshold set there would slow the child and hold its
//     page cache at the threshold, where raw usage reads "over". Watch
//     never writes memory.high.
//   - OOM: inotify IN_MODIFY on memory.events, which the kernel signals
//     after it counts an event; each wake-up compares oom_kill with the
//     last count seen.
//   - Trigger: writes the PSI trigger to memory.pressure and waits for
//     POLLPRI (Documentation/accounting/psi.rst).
func (g *v2Group) Watch(s WatchSpec) (*Watcher, error) {
	w := newWatcher()
	if s.Threshold > 0 {
		c := &crossing{w: w, threshold: s.Threshold, backend: "v2",
			usage: filepath.Join(g.dir, v2Current), stat: filepath.Join(g.dir, memoryStat)}
		// A group that cannot be read is an error now, not a poll that
		// never reports.
		if _, err := readUint(c.usage); err != nil {
			return w.fail(err)
		}
		w.add(watch{fd: -1, first: 0, check: func(bool) time.Duration { return c.look() }})
	}
	if s.OOM {
		in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			return w.fail(fmt.Errorf("inotify: %w", err))
		}
		evFile := filepath.Join(g.dir, v2Events)
		var last uint64
		w.add(watch{fd: in, events: unix.POLLIN, first: never, check: func(bool) time.Duration {
			drain(in)
			if n, err := readKey(evFile, "oom_kill"); err == nil && n > last {
				last = n
				w.send(OOMKill)
			}
			return never
		}})
		if _, err := unix.InotifyAddWatch(in, evFile, unix.IN_MODIFY); err != nil {
			return w.fail(fmt.Errorf("inotify on %s: %w", evFile, err))
		}
		if last, err = readKey(evFile, "oom_kill"); err != nil {
			return w.fail(fmt.Errorf("read oom_kill from %s: %w", evFile, err))
		}
	}
	if s.Trigger != "" {
		pf := filepath.Join(g.dir, v2Pressure)
		fd, err := unix.Open(pf, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return w.fail(fmt.Errorf("open %s: %w", pf, err))
		}
		w.add(watch{fd: fd, events: unix.POLLPRI, first: never, check: func(bool) time.Duration {
			w.send(Pressure)
			return never
		}})
		// The trigger lives as long as this fd stays open (psi.rst).
		if _, err := unix.Write(fd, append([]byte(s.Trigger), 0)); err != nil {
			return w.fail(fmt.Errorf("write PSI trigger %q to %s: %w", s.Trigger, pf, err))
		}
	}
	return w.start()
}

// Watch on v1, through eventfds registered in cgroup.event_control:
//   - Threshold: an eventfd on memory.usage_in_bytes at the threshold,
//     which the kernel signals when raw usage crosses it either way. Raw
//     usage is never under the working set, so raw crossing comes first;
//     at each signal the watcher reads memory.stat. If the working set
//     is under the threshold, page cache holds raw usage up and the
//     eventfd stays quiet until raw falls and rises again, so the
//     watcher polls the working set (the threshold poll) until it
//     crosses or raw usage falls under the threshold.
//   - OOM: an eventfd on memory.oom_control, which the kernel signals
//     as the group enters OOM, before the kill is counted; the watcher
//     reads oom_kill there until it rises (see oomSettle).
//   - Trigger: refused; PSI triggers need cgroup v2.
func (g *v1Group) Watch(s WatchSpec) (*Watcher, error) {
	if s.Trigger != "" {
		return nil, errors.New("memory pressure triggers (PSI) need cgroup v2; this group is on v1")
	}
	w := newWatcher()
	evctl := filepath.Join(g.mem, v1EventControl)
	if s.Threshold > 0 {
		fd, err := registerEvent(g.mem, v1Usage, strconv.FormatUint(s.Threshold, 10))
		if err != nil {
			return w.fail(fmt.Errorf("register a usage threshold in %s: %w", evctl, err))
		}
		c := &crossing{w: w, threshold: s.Threshold, backend: "v1", rawEvent: true,
			usage: filepath.Join(g.mem, v1Usage), stat: filepath.Join(g.mem, memoryStat)}
		// First look at once: raw usage already over the threshold when
		// it was registered gives no signal until it crosses again.
		w.add(watch{fd: fd, events: unix.POLLIN, first: 0, check: func(woke bool) time.Duration {
			if woke {
				drain(fd)
			}
			return c.look()
		}})
	}
	if s.OOM {
		oomCtl := filepath.Join(g.mem, v1OOMCtl)
		last, err := readKey(oomCtl, "oom_kill")
		if err != nil {
			return w.fail(fmt.Errorf("read oom_kill from %s: %w", oomCtl, err))
		}
		fd, err := registerEvent(g.mem, v1OOMCtl, "")
		if err != nil {
			return w.fail(fmt.Errorf("register an OOM eventfd for %s in %s: %w", oomCtl, evctl, err))
		}
		var settle time.Time
		wait := pollMin
		w.add(watch{fd: fd, events: unix.POLLIN, first: never, check: func(woke bool) time.Duration {
			if woke {
				drain(fd)
				settle, wait = time.Now().Add(oomSettle), pollMin
			}
			n, err := readKey(oomCtl, "oom_kill")
			if err != nil {
				return never // the group is gone
			}
			if n > last {
				last = n
				w.send(OOMKill)
				return never
			}
			if time.Now().After(settle) {
				return never
			}
			d := wait
			wait = min(2*wait, pollMax)
			return d
		}})
	}
	return w.start()
}

// Watch without a cgroup rides on the sampler (noneGroup.sample, every
// noneSample), which sends the notices itself: Threshold when the tree's
// RSS (all of it is working set here: there is no page cache to tell
// apart) crosses the threshold upward, OOMKill when the sampler kills the
// tree at the ceiling. No goroutine of its own. PSI triggers are refused.
func (g *noneGroup) Watch(s WatchSpec) (*Watcher, error) {
	if s.Trigger != "" {
		return nil, errors.New("memory pressure triggers (PSI) need cgroup v2; no cgroup is in use")
	}
	w := newWatcher()
	g.mu.Lock()
	g.threshold, g.oom, g.over, g.watcher = s.Threshold, s.OOM, false, w
	g.mu.Unlock()
	w.stop = func() {
		g.mu.Lock()
		if g.watcher == w {
			g.watcher = nil
		}
		g.mu.Unlock()
	}
	return w.start()
}
