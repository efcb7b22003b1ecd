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
	"github.com/guardrun/guardrun/cgroup"
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

	mu      sync.Mutex
	ready   bool
	up      bool // the child runs or guardrun is restarting it
	stop    chan struct{}
	sock    *net.UnixConn
	sockDir string
}

// startSystemd wires sd_notify into a run; the returned func ends it.
func startSystemd(cfg *supervise.Config, readyFrom string) (func(), error) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return func() {}, nil
	}
	n := &sdNotifier{relay: readyFrom == "child", stop: make(chan struct{})}
	if n.relay {
		if err := n.listen(cfg); err != nil {
			return nil, err
		}
	}
	next := cfg.Events
	cfg.Events = func(e supervise.Event) {
		n.event(e)
		if next != nil {
			next(e)
		}
	}
	if every, err := daemon.SdWatchdogEnabled(false); err == nil && every > 0 {
		go n.watchdog(every / 2)
	}
	return n.close, nil
}

func (n *sdNotifier) send(state string) { daemon.SdNotify(false, state) }

func (n *sdNotifier) event(e supervise.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch e.Kind {
	case supervise.Started:
		n.up = true
		if !n.ready && !n.relay {
			n.ready = true
			n.send("READY=1\nMAINPID=" + fmt.Sprint(os.Getpid()))
		}
		n.send(fmt.Sprintf("STATUS=%s running (pid %d, ceiling %s, restarts %d)", e.Run, e.Pid, sizeOrNone(e.Limit), e.Restarts))
	case supervise.Exited:
		n.up = false
		n.send(fmt.Sprintf("STATUS=%s exited (%s %d, peak %s, restarts %d)", e.Run, e.Cause, e.ExitCode, cgroup.FormatSize(e.Peak), e.Restarts))
	case supervise.Restarting:
		n.up = true
		n.send(fmt.Sprintf("STATUS=%s restarting in %s (restarts %d)", e.Run, e.Delay.Round(time.Millisecond), e.Restarts))
	case supervise.ThresholdCrossed:
		n.send(fmt.Sprintf("STATUS=%s at %s of %s: over --restart-at", e.Run, cgroup.FormatSize(e.Usage), sizeOrNone(e.Limit)))
	case supervise.GaveUp:
		n.up = false
		n.send("STATUS=gave up: " + e.Reason)
	case supervise.Stopping:
		n.send("STOPPING=1")
	}
}

func sizeOrNone(b uint64) string {
	if b == 0 {
		return "none"
	}
	return cgroup.FormatSize(b)
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
func (n *sdNotifier) listen(cfg *supervise.Config) error {
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
	n.sock, n.sockDir = conn, dir
	cfg.Env = append(withoutEnv(cfg.Env, "NOTIFY_SOCKET"), "NOTIFY_SOCKET="+path)
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
