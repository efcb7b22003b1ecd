package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/guardrun/guardrun/supervise"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// Held sockets (--listen, and systemd's, relayed): guardrun binds each
// once, before anything else of the run is made, and hands them to every
// child under systemd's socket-activation protocol (supervise's startIn). It
// never accepts on them: while a child restarts, connections wait in the
// kernel's accept queue, and the next child takes them from there.

func listenFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "listen", Usage: "hold a listening socket `ADDR` across restarts and hand it to each child as fd 3, 4, ... (systemd's LISTEN_FDS; repeatable): [NAME=]tcp:HOST:PORT, tcp:[::1]:PORT or unix:PATH", EnvVars: env("listen")}
}

// listenSpec is one --listen: [NAME=]tcp:HOST:PORT or [NAME=]unix:PATH.
type listenSpec struct {
	arg  string // as given, for what is said of it
	name string // its LISTEN_FDNAMES entry
	// tcp: host ("" for every address) and port; unix: path.
	network, host, path string
	port                uint16
}

const listenHint = "use tcp:HOST:PORT (tcp:127.0.0.1:8080, tcp:[::1]:8080, tcp::8080 for every address) or unix:PATH, with NAME= in front to name it"

// parseListen reads one --listen. The name is what LISTEN_FDNAMES says
// of the socket: systemd's names may hold anything printable but the
// colon that separates them (sd_listen_fds_with_names(3)), so the address
// itself cannot be one; by default it is the address with each colon a
// dash (tcp-127.0.0.1-8080, unix-/run/api.sock). A given NAME= is
// letters, digits and . _ - alone, so that it never reads as an address.
func parseListen(arg string) (listenSpec, error) {
	s := listenSpec{arg: arg}
	addr := arg
	if n, rest, ok := strings.Cut(arg, "="); ok && !strings.ContainsAny(n, ":/") {
		if !validFDName(n) {
			return s, fmt.Errorf("name %q: use 1 to 255 letters, digits and . _ -", n)
		}
		s.name, addr = n, rest
	}
	if s.name == "" {
		s.name = strings.ReplaceAll(addr, ":", "-")
	}
	network, rest, ok := strings.Cut(addr, ":")
	switch {
	case !ok:
		return s, errors.New("no tcp: or unix: in front")
	case network == "unix":
		if rest == "" {
			return s, errors.New("no path")
		}
		// sun_path holds 108 bytes with its NUL; an abstract socket (@)
		// has no file to protect or remove, and is not taken.
		if strings.HasPrefix(rest, "@") {
			return s, errors.New("an abstract socket (@) is not taken: give a path")
		}
		p, err := filepath.Abs(rest)
		if err != nil {
			return s, err
		}
		if len(p) > len(unix.RawSockaddrUnix{}.Path)-1 {
			return s, fmt.Errorf("the path is %d bytes long; a unix socket's is at most %d", len(p), len(unix.RawSockaddrUnix{}.Path)-1)
		}
		s.network, s.path = network, p
	case network == "tcp":
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return s, errors.New(strings.TrimPrefix(err.Error(), "address "+rest+": "))
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			// Port 0 would be a new port each run: no client could know it.
			return s, fmt.Errorf("port %q: use a number from 1 to 65535", port)
		}
		if strings.ContainsAny(host, " /") {
			return s, fmt.Errorf("host %q: not a host", host)
		}
		s.network, s.host, s.port = network, host, uint16(n)
	default:
		return s, fmt.Errorf("%s: unknown network", network)
	}
	return s, nil
}

func validFDName(n string) bool {
	if n == "" || len(n) > 255 {
		return false
	}
	for _, r := range n {
		if !(r == '.' || r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// heldSockets are the run's listening sockets, in the order each child
// gets them: systemd's first, then those of --listen.
type heldSockets struct {
	files []*os.File
	names []string
	// made are the unix socket files guardrun made, to remove at the end
	// if each is still the one it made.
	made []socketFile
}

// socketFile is a unix socket's path and the file it made there.
type socketFile struct {
	path     string
	dev, ino uint64
}

// loadListen takes the sockets systemd passed guardrun, if any, and binds
// those of --listen, into cfg. It is the last of the settings: bad input
// anywhere else has made nothing by then.
func loadListen(c *cli.Context, cfg *supervise.Config) (*heldSockets, error) {
	var specs []listenSpec
	seen := map[string]bool{}
	for _, arg := range c.StringSlice("listen") {
		s, err := parseListen(arg)
		if err != nil {
			return nil, usageError(fmt.Sprintf("--listen %s: %v", arg, err), listenHint)
		}
		where := fmt.Sprintf("%s %s %d", s.network, s.path+s.host, s.port)
		if seen[where] {
			return nil, usageError(fmt.Sprintf("--listen %s: given twice", arg), "give each address once; a child gets each socket once")
		}
		seen[where] = true
		specs = append(specs, s)
	}
	h := &heldSockets{}
	h.relaySystemd(cfg)
	for _, s := range specs {
		if err := h.bind(s); err != nil {
			h.close()
			return nil, err
		}
	}
	if len(h.files) > 0 {
		cfg.ListenFiles, cfg.ListenNames = h.files, h.names
	}
	return h, nil
}

// relaySystemd takes the sockets systemd passed guardrun itself
// (LISTEN_PID is guardrun's pid), to hand to each child as systemd would
// have: same order, same names. go-systemd's activation.Files makes them
// close-on-exec in guardrun, so no hook or sentinel gets them; each child
// gets its copies through ExtraFiles, dup2'd without the flag. It unsets
// guardrun's own LISTEN_* (asked to), and they are taken out of the
// child's environment too: supervise sets the child's own.
//
// With --listen as well, both are handed on, systemd's first: a child
// written for the unit finds them where systemd would have put them.
func (h *heldSockets) relaySystemd(cfg *supervise.Config) {
	if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err != nil || pid != os.Getpid() {
		return // none, or another process's: the child's to ignore
	}
	_, named := os.LookupEnv("LISTEN_FDNAMES")
	for _, f := range activation.Files(true) {
		h.files = append(h.files, f)
		name := f.Name()
		if !named {
			name = "unknown" // what sd_listen_fds_with_names(3) says then
		}
		h.names = append(h.names, name)
	}
	cfg.Env = supervise.WithoutListenEnv(cfg.Env)
}

// listenBacklog asks for the host's longest accept queue: the kernel cuts
// a listen(2) backlog to net.core.somaxconn (4096 since Linux 5.4). It is
// the queue connections wait in while a child restarts. A child may set
// its own on the same socket: Node.js calls listen(511) on an fd it is
// given (its default backlog), Go's net.FileListener does not call listen.
const listenBacklog = math.MaxInt32

// bind binds one --listen and holds it. A failure is one line naming the
// address and the errno, and a hint.
func (h *heldSockets) bind(s listenSpec) error {
	var fd int
	var err error
	if s.network == "unix" {
		var made socketFile
		if fd, made, err = bindUnix(s.path); err == nil {
			h.made = append(h.made, made)
		}
	} else {
		fd, err = bindTCP(s.host, s.port)
	}
	if err != nil {
		return usageError(fmt.Sprintf("--listen %s: %v", s.arg, err), bindHints(s, err)...)
	}
	h.files = append(h.files, os.NewFile(uintptr(fd), s.name))
	h.names = append(h.names, s.name)
	return nil
}

// errnoError is a system call's failure as the user reads it: "bind:
// address already in use (EADDRINUSE)".
func errnoError(call string, err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("%s: %w (%s)", call, errno, unix.ErrnoName(errno))
	}
	return fmt.Errorf("%s: %w", call, err)
}

func bindHints(s listenSpec, err error) []string {
	switch {
	case errors.Is(err, unix.EADDRINUSE) && s.network == "tcp":
		return []string{fmt.Sprintf("another process listens on port %d (`ss -ltnp 'sport = :%d'` names it): stop it, or give another port", s.port, s.port)}
	case errors.Is(err, unix.EADDRINUSE):
		return []string{"a server answers on " + s.path + ": stop it, or give another path"}
	case errors.Is(err, unix.EACCES) && s.network == "tcp":
		return []string{"a port below 1024 needs root or CAP_NET_BIND_SERVICE (net.ipv4.ip_unprivileged_port_start); give a higher port"}
	case errors.Is(err, unix.EACCES):
		return []string{"guardrun cannot write in " + filepath.Dir(s.path) + ": give a path in a directory it owns, e.g. /run/NAME/"}
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return []string{"that address is not one of this host's: give one of its own, 127.0.0.1 or none (tcp::PORT) for every address"}
	case errors.Is(err, errNotSocket):
		return []string{"guardrun binds a new socket there and removes only a stale socket (one nothing answers on); move it away, or give another path"}
	}
	return []string{listenHint}
}

// bindTCP binds host:port: every address, IPv6 and IPv4, when host is ""
// (as Go's net.Listen(":PORT") and systemd's ListenStream=PORT do). The
// socket is blocking, as systemd passes its own: a child that accepts in a
// blocking loop works, and Node.js and Go set O_NONBLOCK themselves. It is
// close-on-exec in guardrun, and SO_REUSEADDR lets a new guardrun bind the
// port while the last one's connections are in TIME_WAIT, as systemd and Go
// do.
func bindTCP(host string, port uint16) (int, error) {
	var sa unix.Sockaddr
	family, dual := unix.AF_INET6, false
	switch ip, err := netip.ParseAddr(strings.Trim(host, "[]")); {
	case host == "":
		sa, dual = &unix.SockaddrInet6{Port: int(port)}, true
	case err == nil && ip.Is4():
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(port), Addr: ip.As4()}
	case err == nil:
		zone := 0
		if z := ip.Zone(); z != "" {
			if ifc, err := net.InterfaceByName(z); err == nil {
				zone = ifc.Index
			}
		}
		sa = &unix.SockaddrInet6{Port: int(port), Addr: ip.As16(), ZoneId: uint32(zone)}
	default:
		// A name: its first address, IPv4 first, as net.Listen takes it.
		a, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
		if err != nil {
			return -1, fmt.Errorf("resolve %s: %v", host, err)
		}
		ip, _ := netip.AddrFromSlice(a.IP)
		return bindTCP(ip.Unmap().String(), port)
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil && dual && errors.Is(err, unix.EAFNOSUPPORT) {
		// No IPv6 here: every address is every IPv4 address.
		family, sa, dual = unix.AF_INET, &unix.SockaddrInet4{Port: int(port)}, false
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return -1, errnoError("socket", err)
	}
	fail := func(call string, err error) (int, error) {
		unix.Close(fd)
		return -1, errnoError(call, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt SO_REUSEADDR", err)
	}
	if dual {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return fail("setsockopt IPV6_V6ONLY", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return fail("listen", err)
	}
	return fd, nil
}

var errNotSocket = errors.New("not a socket")

// notSocketError is something other than a socket where one is to be made:
// kind says what ("a symbolic link"). It is errNotSocket.
type notSocketError struct{ kind string }

func (e *notSocketError) Error() string        { return e.kind + " is there: " + errNotSocket.Error() }
func (e *notSocketError) Is(target error) bool { return target == errNotSocket }

// socketMode is a unix socket's mode: guardrun's user and group may
// connect, nobody else. Not 0600: a front proxy usually reaches a
// service's socket by its group (nginx's www-data), and the group a socket
// gets is guardrun's own or, in a setgid directory, the directory's. Not
// systemd's 0666 default: a held socket outlives each child, and what
// another user could connect to, it could flood.
const socketMode = 0o660

// bindUnix binds a unix socket at path with socketMode, whatever the
// umask: it is chmod'ed after bind and before listen, and nobody can
// connect to a socket that does not listen, so there is no window. It
// never follows a link planted at path: a path that exists and is not a
// socket (a link, a file, a directory) is refused and left alone; a
// socket there is removed only when it is stale (a connect is refused:
// nothing listens), as a guardrun killed hard leaves it; one that answers
// is in use. bind(2) itself never follows a link at its last component
// (EADDRINUSE), and the chmod goes through an O_PATH|O_NOFOLLOW descriptor
// of what bind made, never through the path.
func bindUnix(path string) (int, socketFile, error) {
	made := socketFile{path: path}
	if err := roomForSocket(path); err != nil {
		return -1, made, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, made, errnoError("socket", err)
	}
	fail := func(err error) (int, socketFile, error) {
		unix.Close(fd)
		return -1, made, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return fail(errnoError("bind", err))
	}
	node, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(errnoError("open what bind made", err))
	}
	defer unix.Close(node)
	var st unix.Stat_t
	if err := unix.Fstat(node, &st); err != nil {
		return fail(errnoError("stat what bind made", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		// Replaced between bind and open: not ours to chmod, nor to remove.
		return fail(fmt.Errorf("%w: what bind made there was replaced", errNotSocket))
	}
	made.dev, made.ino = st.Dev, st.Ino
	// fchmod(2) of an O_PATH descriptor is EBADF; its /proc/self/fd link
	// names the same inode, and is what glibc's fchmodat falls back on.
	if err := unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", node), socketMode); err != nil {
		unix.Unlink(path)
		return fail(errnoError("chmod", err))
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		unix.Unlink(path)
		return fail(errnoError("listen", err))
	}
	return fd, made, nil
}

// roomForSocket makes room at path for a new socket, a held one (--listen)
// or the control socket: nothing there, or a stale socket (a connect is
// refused: nothing listens, as a guardrun killed hard leaves it), which it
// removes. Anything else is an error and is left as it is: something that
// is not a socket (a *notSocketError), a socket that answers (EADDRINUSE).
func roomForSocket(path string) error {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return errnoError("lstat", err)
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return &notSocketError{nodeKind(st.Mode)}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return errnoError("socket", err)
	}
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	unix.Close(fd)
	switch {
	case errors.Is(err, unix.ECONNREFUSED):
		// Stale. unlink(2) does not follow a link either, should one be
		// put there since the lstat.
		if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
			return errnoError("remove the stale socket", err)
		}
		return nil
	case err == nil || errors.Is(err, unix.EAGAIN):
		// It answers (EAGAIN: its queue is full, so it listens).
		return fmt.Errorf("a server answers there: %w (%s)", unix.EADDRINUSE, unix.ErrnoName(unix.EADDRINUSE))
	}
	return errnoError("connect to the socket there", err)
}

func nodeKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	}
	return "a file that is not a socket"
}

// close closes the sockets and removes each unix socket file guardrun
// made, if it is still the one it made: at the end of the run, and on
// every way out before it. It may be called more than once.
func (h *heldSockets) close() {
	if h == nil {
		return
	}
	for _, f := range h.files {
		f.Close()
	}
	h.files = nil
	for _, m := range h.made {
		var st unix.Stat_t
		if unix.Lstat(m.path, &st) == nil && st.Dev == m.dev && st.Ino == m.ino {
			unix.Unlink(m.path)
		}
	}
	h.made = nil
}
