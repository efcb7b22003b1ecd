package testchild

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// serveFD is a service under systemd's socket-activation protocol, as
// docs/LISTEN.md shows one in Go: it checks what sd_listen_fds(3) checks
// (LISTEN_PID is its own pid, LISTEN_FDS, and here LISTEN_FDNAMES is
// names), writes FILE (atomically) with what it found, "pid P fds N names
// NAMES fd3 MODE", takes fd 3 with net.FileListener, and appends "ready P"
// to FILE.log. It answers n
// HTTP requests, one connection each, with "served by P", then exits 0;
// a check that fails is in FILE and exits 1.
func serveFD(file, names, n string) int {
	count, err := strconv.Atoi(n)
	if err != nil || count < 1 {
		fmt.Fprintln(os.Stderr, "serve-fd: N must be a positive number")
		return 2
	}
	pid := os.Getpid()
	var st unix.Stat_t
	mode := "none"
	if unix.Fstat(3, &st) == nil {
		mode = fmt.Sprintf("%o", st.Mode&unix.S_IFMT)
	}
	got := fmt.Sprintf("pid %d fds %s names %s fd3 %s", pid, os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"), mode)
	if os.Getenv("LISTEN_PID") != strconv.Itoa(pid) {
		writeAtomic(file, got+"; LISTEN_PID="+os.Getenv("LISTEN_PID")+" is not this process")
		return 1
	}
	if want := len(strings.Split(names, ":")); os.Getenv("LISTEN_FDS") != strconv.Itoa(want) || os.Getenv("LISTEN_FDNAMES") != names {
		writeAtomic(file, got+"; want fds "+strconv.Itoa(want)+" names "+names)
		return 1
	}
	l, err := net.FileListener(os.NewFile(3, "listen"))
	if err != nil {
		writeAtomic(file, got+"; "+err.Error())
		return 1
	}
	writeAtomic(file, got)
	// One line a child, for a test to wait until the next one is ready.
	if f, err := os.OpenFile(file+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		fmt.Fprintf(f, "ready %d\n", pid)
		f.Close()
	}
	for range count {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "serve-fd:", err)
			return 1
		}
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			body := fmt.Sprintf("served by %d\n", pid)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
		c.Close()
	}
	return 0
}
