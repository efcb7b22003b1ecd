package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/internal/proc"
	"github.com/guardrun/guardrun/observe"
	"github.com/guardrun/guardrun/supervise"
	"golang.org/x/sys/unix"
)

// This file is the control socket, one concern in one place: a unix
// stream socket per run, STATE_DIR/NAME.sock beside the state file,
// through which `guardrun restart|stop|signal NAME` reach the run. One
// connection carries one request, a JSON line ({"action":"restart"},
// {"action":"signal","signal":"USR1"}), and its replies, JSON lines:
// one at once and, for a restart or a stop under way, the last ("done")
// when it is done.
//
// Who may ask: the run's own user and root, checked on each connection
// by SO_PEERCRED (unix(7)). The socket is mode 0600 besides, so another
// user cannot even connect; the check holds should the mode be loosened.

// Limits of a connection: a request is a line of a few dozen bytes; the
// run takes one within controlTake, or is stuck; the handlers of the
// connections still open at the run's end get controlDrain to answer.
const (
	controlRequestMax = 4 << 10
	controlTake       = 5 * time.Second
	controlDrain      = 2 * time.Second
	controlConns      = 16 // connections served at once; more are told to retry
	// sunPathMax is sockaddr_un's sun_path, less its terminating NUL.
	sunPathMax = 107
)

// controlPath is the run's control socket in its state directory.
func controlPath(dir, run string) string { return filepath.Join(dir, run+".sock") }

// controlRequest is the request line.
type controlRequest struct {
	Action string `json:"action"`
	Signal string `json:"signal,omitempty"`
}

// controlReply is a reply line. Refused says the caller's credentials were
// refused; Message is the sentence for the person who asked.
type controlReply struct {
	OK       bool   `json:"ok"`
	Done     bool   `json:"done"`
	Refused  bool   `json:"refused,omitempty"`
	Pid      int    `json:"pid,omitempty"`
	NewPid   int    `json:"new_pid,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Message  string `json:"message"`
}

func replyOf(r supervise.Reply) controlReply {
	cr := controlReply{OK: r.Err == nil, Done: r.Done, Pid: r.Pid, NewPid: r.NewPid, Message: r.Sentence()}
	if r.Action == supervise.ActionStop && r.Done && r.Err == nil {
		code := r.ExitCode
		cr.ExitCode = &code
	}
	return cr
}

// controlServer serves one run's control socket.
type controlServer struct {
	l        *net.UnixListener
	path     string
	ino      uint64 // the socket's inode: only ours is removed at the end
	run      string
	uid      uint32 // the run's user
	requests chan<- supervise.Request
	log      *slog.Logger
	quit     chan struct{}
	conns    chan struct{} // a slot per connection served
	wg       sync.WaitGroup
}

// startControl makes the run's control socket in dir and serves it. A
// socket that cannot be made is a warning, never a failure: the run goes
// on, and `guardrun restart` says it cannot reach it. nil for none.
func startControl(dir, run string, requests chan<- supervise.Request, log *slog.Logger) *controlServer {
	if dir == "" {
		return nil // --state-dir off, or no runtime directory: no socket, as no state file
	}
	cs, err := listenControl(dir, run, requests, log)
	if err != nil {
		log.Warn("no control socket: `guardrun restart|stop|signal` cannot reach this run", "run", run, "err", err)
		return nil
	}
	cs.wg.Add(1)
	go cs.serve()
	return cs
}

// listenControl makes the socket. The directory must be one no other user
// can write (observe.PrepareStateDir: this user's or root's, not group or
// world writable), so nothing in it changes between the checks here and
// the bind. What is at the path already is never followed: a socket that
// nothing answers on (a guardrun that was killed) is removed, anything
// else (a planted file or symlink, a live run) is left alone and refused.
func listenControl(dir, run string, requests chan<- supervise.Request, log *slog.Logger) (*controlServer, error) {
	if err := observe.PrepareStateDir(dir); err != nil {
		return nil, err
	}
	path := controlPath(dir, run)
	if len(path) > sunPathMax {
		return nil, fmt.Errorf("control socket %q: the path is %d bytes, over the kernel's %d for a unix socket: use a shorter --state-dir", path, len(path), sunPathMax)
	}
	if err := roomForSocket(path); err != nil {
		var ns *notSocketError
		switch {
		case errors.As(err, &ns):
			return nil, fmt.Errorf("control socket %q: something that is not a socket is there (%s): not followed, not replaced; remove it if nothing needs it", path, ns.kind)
		case errors.Is(err, syscall.EADDRINUSE):
			return nil, fmt.Errorf("control socket %q: another guardrun answers on it", path)
		}
		return nil, fmt.Errorf("control socket %q: %w", path, err)
	}
	// bind(2) makes the socket and fails on anything at the path, a
	// dangling symlink included: it never follows one.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %q: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // removed by close, and only if it is still ours
	// The mode bind gave (0777 less the umask) is narrowed at once; a
	// caller who connects in between is still checked by SO_PEERCRED.
	fi, err := os.Lstat(path)
	if err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err != nil {
		l.Close()
		os.Remove(path)
		return nil, fmt.Errorf("control socket %q: %w", path, err)
	}
	return &controlServer{l: l, path: path, ino: fi.Sys().(*syscall.Stat_t).Ino, run: run, uid: uint32(os.Geteuid()),
		requests: requests, log: log, quit: make(chan struct{}), conns: make(chan struct{}, controlConns)}, nil
}

func (cs *controlServer) serve() {
	defer cs.wg.Done()
	for {
		conn, err := cs.l.AcceptUnix()
		if err != nil {
			select {
			case <-cs.quit:
			default:
				cs.log.Warn("control socket: accept", "run", cs.run, "path", cs.path, "err", err)
			}
			return
		}
		select {
		case cs.conns <- struct{}{}:
		default:
			writeReply(conn, controlReply{Done: true, Message: "the run is busy with other requests: try again"})
			conn.Close()
			continue
		}
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			defer func() { <-cs.conns }()
			defer conn.Close()
			cs.handle(conn)
		}()
	}
}

// handle serves one connection: who asks, what, and the run's replies.
func (cs *controlServer) handle(conn *net.UnixConn) {
	by, err := peerOf(conn)
	if err != nil {
		cs.log.Warn("control socket: no peer credentials", "run", cs.run, "err", err)
		return
	}
	if by.Uid != cs.uid && by.Uid != 0 {
		cs.log.Warn("control: refused a request from another user", "run", cs.run, "by", by.String(), "run_uid", cs.uid)
		writeReply(conn, controlReply{Done: true, Refused: true,
			Message: fmt.Sprintf("refused: %s is neither the user of %s (uid %d) nor root", by.String(), cs.run, cs.uid)})
		return
	}
	conn.SetDeadline(time.Now().Add(controlTake))
	line, err := bufio.NewReader(io.LimitReader(conn, controlRequestMax)).ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return // gone, or no request in time
	}
	var in controlRequest
	if err := json.Unmarshal(line, &in); err != nil {
		writeReply(conn, controlReply{Done: true, Message: "not a request: " + err.Error()})
		return
	}
	req := supervise.Request{Action: supervise.Action(in.Action), By: by, Reply: make(chan supervise.Reply, 2)}
	switch req.Action {
	case supervise.ActionRestart, supervise.ActionStop:
	case supervise.ActionSignal:
		if req.Signal, err = supervise.ParseSignal(in.Signal); err != nil {
			writeReply(conn, controlReply{Done: true, Message: err.Error()})
			return
		}
	default:
		writeReply(conn, controlReply{Done: true, Message: fmt.Sprintf("unknown action %q", in.Action)})
		return
	}
	t := time.NewTimer(controlTake)
	defer t.Stop()
	select {
	case cs.requests <- req:
	case <-cs.quit:
		writeReply(conn, controlReply{Done: true, Message: cs.run + " is ending"})
		return
	case <-t.C:
		writeReply(conn, controlReply{Done: true, Message: fmt.Sprintf("%s did not take the request within %s", cs.run, controlTake)})
		return
	}
	conn.SetDeadline(time.Time{})
	for {
		var r supervise.Reply
		select {
		case r = <-req.Reply:
		case <-cs.quit:
			// The run answered all it holds before the socket closes:
			// what is in the channel is the last word.
			select {
			case r = <-req.Reply:
			default:
				return
			}
		}
		if writeReply(conn, replyOf(r)) != nil || r.Done {
			return
		}
	}
}

func writeReply(conn net.Conn, r controlReply) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	conn.SetWriteDeadline(time.Now().Add(controlTake))
	_, err = conn.Write(append(b, '\n'))
	return err
}

// peerOf is who is at the other end, by the kernel's word (SO_PEERCRED:
// the credentials at connect), and their command, for the log.
func peerOf(conn *net.UnixConn) (supervise.Peer, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return supervise.Peer{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return supervise.Peer{}, err
	}
	if credErr != nil {
		return supervise.Peer{}, credErr
	}
	p := supervise.Peer{Uid: cred.Uid, Pid: int(cred.Pid)}
	if st, err := proc.ReadStat(p.Pid); err == nil {
		p.Command = st.Comm
	}
	return p, nil
}

// close stops serving, lets the open connections write what the run
// answered, and removes the socket if it is still the one it made.
func (cs *controlServer) close() {
	if cs == nil {
		return
	}
	close(cs.quit)
	cs.l.Close()
	done := make(chan struct{})
	go func() { cs.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(controlDrain):
	}
	if fi, err := os.Lstat(cs.path); err == nil && fi.Sys().(*syscall.Stat_t).Ino == cs.ino {
		os.Remove(cs.path)
	}
}
