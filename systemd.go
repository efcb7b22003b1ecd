package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/guardrun/guardrun/supervise"
	"golang.org/x/sys/unix"
)

// sdNotifier speaks systemd's notify protocol (sd_notify(3)) when guardrun
// runs as a Type=notify unit: READY=1 once the child runs (or, with
// --notify-ready child, when the child itself says so), STATUS= with what
// a person wants in `systemctl status`, WATCHDOG=1 while the child runs or
// is being restarted, STOPPING=1 when told to stop. Without NOTIFY_SOCKET
// it does nothing.
type sdNotifier struct {
	relay bool // --notify-ready child

	mu       sync.Mutex
	ready    bool
	up       bool // the child runs or guardrun is restarting it
	stop     chan struct{}
	sock     *net.UnixConn
	sockDir  string
	sockPath string
}

// newSystemd speaks to systemd when guardrun runs under it (NOTIFY_SOCKET
// is set); nil otherwise, and every method of a nil sdNotifier does
// nothing. With --notify-ready child it makes the child's own socket now,
// before the run's config is complete (childEnv).
func newSystemd(readyFrom string) (*sdNotifier, error) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil, nil
	}
	n := &sdNotifier{relay: readyFrom == "child", stop: make(chan struct{})}
	if n.relay {
		if err := n.listen(); err != nil {
			return nil, err
		}
	}
	if every, err := daemon.SdWatchdogEnabled(false); err == nil && every > 0 {
		go n.watchdog(every / 2)
	}
	return n, nil
}

// childEnv is env for the child: NOTIFY_SOCKET is the child's own socket
// with --notify-ready child, and systemd's otherwise.
func (n *sdNotifier) childEnv(env []string) []string {
	if n == nil || n.sock == nil {
		return env
	}
	return append(withoutEnv(env, "NOTIFY_SOCKET"), "NOTIFY_SOCKET="+n.sockPath)
}

func (n *sdNotifier) send(state string) { daemon.SdNotify(false, state) }

// Observe tells systemd what the run's events mean for the unit.
func (n *sdNotifier) Observe(e supervise.Event) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	switch e.Kind {
	case supervise.Started:
		n.up = true
		if !n.ready && !n.relay {
			n.ready = true
			n.send("READY=1\nMAINPID=" + fmt.Sprint(os.Getpid()))
		}
	case supervise.Exited, supervise.GaveUp:
		n.up = false
	case supervise.Restarting:
		n.up = true
	case supervise.Stopping:
		n.send("STOPPING=1")
	}
	switch e.Kind {
	case supervise.Started, supervise.Exited, supervise.Restarting, supervise.ThresholdCrossed, supervise.MemoryRestart, supervise.GaveUp:
		// systemctl status shows the latest: the event's own sentence.
		n.send("STATUS=" + e.Sentence())
	}
}

// watchdog pings at half WatchdogSec, as sd_watchdog_enabled(3) advises,
// while the child runs or is being restarted: a child down for good stops
// the pings, and systemd acts on it by the unit's own policy.
func (n *sdNotifier) watchdog(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.mu.Lock()
			up := n.up
			n.mu.Unlock()
			if up {
				n.send("WATCHDOG=1")
			}
		}
	}
}

// listen gives the child a notify socket of its own and relays its READY=1
// and STATUS= to systemd, for a child that speaks sd_notify itself (it
// knows better than guardrun when it serves).
func (n *sdNotifier) listen() error {
	dir, err := os.MkdirTemp("", "guardrun-notify-")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("--notify-ready child: %w", err)
	}
	// The child may run as another user one day; the socket is only as
	// open as its directory, which MkdirTemp made 0700.
	n.sock, n.sockDir, n.sockPath = conn, dir, path
	go n.relayLoop()
	return nil
}

func (n *sdNotifier) relayLoop() {
	buf := make([]byte, 4096)
	for {
		k, err := n.sock.Read(buf)
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(buf[:k]), "\n") {
			switch {
			case line == "READY=1":
				n.mu.Lock()
				if !n.ready {
					n.ready = true
					n.send("READY=1\nMAINPID=" + fmt.Sprint(os.Getpid()))
				}
				n.mu.Unlock()
			case strings.HasPrefix(line, "STATUS="):
				n.send(line)
			}
		}
	}
}

func (n *sdNotifier) close() {
	if n == nil {
		return
	}
	close(n.stop)
	if n.sock != nil {
		n.sock.Close()
		os.RemoveAll(n.sockDir)
	}
}

func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// journalStream reports whether stderr is the journal's stream (systemd
// sets JOURNAL_STREAM to its device and inode, systemd.exec(5)): then log
// lines carry a syslog priority prefix and no timestamp of their own.
func journalStream() bool {
	want := os.Getenv("JOURNAL_STREAM")
	if want == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(2, &st); err != nil {
		return false
	}
	return want == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
