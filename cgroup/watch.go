package cgroup

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/containerd/cgroups/v3/cgroup1"
	"golang.org/x/sys/unix"
)

// Notice is what a Watcher reports.
type Notice int

const (
	// Threshold: usage reached the watched threshold (v2: the memory.high
	// counter in memory.events rose; v1: the usage threshold eventfd
	// fired with usage at or above it; none: a sample was above it).
	Threshold Notice = iota
	// Pressure: the group's PSI trigger on memory.pressure fired (v2).
	Pressure
	// OOMKill: the group's oom_kill counter rose: the kernel's OOM killer
	// killed a process in it (v2: memory.events; v1: the
	// memory.oom_control eventfd; none: the sampler killed the tree).
	OOMKill
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
	Threshold uint64 // bytes of usage; 0 for none
	// Trigger is a PSI trigger for memory.pressure, in the kernel's own
	// form ("some 100000 1000000": 100 ms stalled in any 1 s), "" for none.
	Trigger string
	// OOM asks for an OOMKill notice each time the kernel kills a process
	// in the group, while the child lives.
	OOM bool
}

// Watcher delivers notices from the kernel without polling: the goroutine
// behind it sleeps in poll(2) until the kernel wakes it.
type Watcher struct {
	C     <-chan Notice
	once  sync.Once
	stop  func()
	fds   []int
	wake  [2]int // a pipe that ends the poll
	notes chan Notice
	done  chan struct{}
}

func newWatcher() (*Watcher, error) {
	w := &Watcher{notes: make(chan Notice, 4), done: make(chan struct{})}
	w.C = w.notes
	if err := unix.Pipe2(w.wake[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	return w, nil
}

// send drops a notice the reader has not caught up with: one pending
// notice of a kind says all there is to say.
func (w *Watcher) send(n Notice) {
	select {
	case w.notes <- n:
	default:
	}
}

// Close stops the watcher and frees its descriptors. Safe to call twice and
// on a nil Watcher.
func (w *Watcher) Close() {
	if w == nil {
		return
	}
	w.once.Do(func() {
		unix.Write(w.wake[1], []byte{0})
		if w.stop != nil {
			w.stop()
		}
		<-w.done
		for _, fd := range append(w.fds, w.wake[0], w.wake[1]) {
			unix.Close(fd)
		}
	})
}

// loop polls the given fds for events (POLLIN or POLLPRI per fd) and calls
// on(i) for each one that fired, until Close.
func (w *Watcher) loop(events []int16, on func(i int)) {
	defer close(w.done)
	pfds := make([]unix.PollFd, 0, len(w.fds)+1)
	for i, fd := range w.fds {
		pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: events[i]})
	}
	pfds = append(pfds, unix.PollFd{Fd: int32(w.wake[0]), Events: unix.POLLIN})
	for {
		_, err := unix.Poll(pfds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pfds[len(pfds)-1].Revents != 0 {
			return
		}
		for i := range w.fds {
			if pfds[i].Revents&(events[i]|unix.POLLERR) != 0 {
				on(i)
			}
		}
	}
}

// watchV2 watches memory.events with inotify for a rising "high" counter;
// the threshold is made memory.high (lowered to it when above), so the
// kernel itself marks the crossing and throttles the group from there on,
// which also buys the child time to shut down before the hard ceiling.
func (g *v2Group) Watch(s WatchSpec) (*Watcher, error) {
	w, err := newWatcher()
	if err != nil {
		return nil, err
	}
	var events []int16
	var handlers []func()
	if s.Threshold > 0 {
		highFile := filepath.Join(g.dir, v2High)
		cur, err := readUint(highFile)
		if err != nil {
			w.Close()
			return nil, err
		}
		if cur == 0 || cur > s.Threshold {
			if err := writeFile(highFile, strconv.FormatUint(s.Threshold, 10)); err != nil {
				w.Close()
				return nil, err
			}
		}
		in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.fds = append(w.fds, in)
		evFile := filepath.Join(g.dir, v2Events)
		if _, err := unix.InotifyAddWatch(in, evFile, unix.IN_MODIFY); err != nil {
			w.Close()
			return nil, fmt.Errorf("inotify on %s: %w", evFile, err)
		}
		last, _ := readKey(evFile, "high")
		events = append(events, unix.POLLIN)
		handlers = append(handlers, func() {
			buf := make([]byte, 4096)
			for {
				if n, _ := unix.Read(in, buf); n <= 0 {
					break
				}
			}
			if n, err := readKey(evFile, "high"); err == nil && n > last {
				last = n
				w.send(Threshold)
			}
		})
	}
	if s.Trigger != "" {
		pf := filepath.Join(g.dir, v2Pressure)
		fd, err := unix.Open(pf, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("open %s: %w", pf, err)
		}
		w.fds = append(w.fds, fd)
		// The trigger lives as long as this fd stays open (psi.rst).
		if _, err := unix.Write(fd, append([]byte(s.Trigger), 0)); err != nil {
			w.Close()
			return nil, fmt.Errorf("write PSI trigger %q to %s: %w", s.Trigger, pf, err)
		}
		events = append(events, unix.POLLPRI)
		handlers = append(handlers, func() { w.send(Pressure) })
	}
	go w.loop(events, func(i int) { handlers[i]() })
	return w, nil
}

// Watch on v1 registers a usage threshold through cgroup.event_control: the
// kernel signals an eventfd whenever memory.usage_in_bytes crosses it, in
// either direction, so each wake-up is checked against the usage.
func (g *v1Group) Watch(s WatchSpec) (*Watcher, error) {
	if s.Trigger != "" {
		return nil, errors.New("memory pressure triggers (PSI) need cgroup v2; this group is on v1")
	}
	w, err := newWatcher()
	if err != nil {
		return nil, err
	}
	if s.Threshold == 0 {
		go w.loop(nil, nil)
		return w, nil
	}
	efd, err := g.cg.RegisterMemoryEvent(cgroup1.MemoryThresholdEvent(s.Threshold, false))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("register a usage threshold in %s: %w", filepath.Join(g.mem, "cgroup.event_control"), err)
	}
	fd := int(efd)
	unix.SetNonblock(fd, true)
	w.fds = append(w.fds, fd)
	usage := filepath.Join(g.mem, v1Usage)
	go w.loop([]int16{unix.POLLIN}, func(int) {
		var buf [8]byte
		unix.Read(fd, buf[:])
		if u, err := readUint(usage); err == nil && u >= s.Threshold {
			w.send(Threshold)
		}
	})
	return w, nil
}

// Watch without a cgroup rides on the sampler: a sample at or above the
// threshold is a notice.
func (g *noneGroup) Watch(s WatchSpec) (*Watcher, error) {
	if s.Trigger != "" {
		return nil, errors.New("memory pressure triggers (PSI) need cgroup v2; no cgroup is in use")
	}
	w, err := newWatcher()
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.threshold, g.watcher = s.Threshold, w
	g.mu.Unlock()
	w.stop = func() {
		g.mu.Lock()
		g.watcher = nil
		g.mu.Unlock()
	}
	go w.loop(nil, nil)
	return w, nil
}
