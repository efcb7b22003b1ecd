package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// A transient scope: where systemd manages this process's cgroup and has
// delegated none of it to guardrun, guardrun asks that systemd for a
// scope of its own with Delegate=yes, as `systemd-run --scope -p
// Delegate=yes` would, moves itself into it, and from there takes the
// delegated path (v2Base): its groups go inside the scope, beside the leaf
// it moves itself into. systemd's "Control Group APIs and Delegation"
// asks exactly this of a program that makes cgroups: stay inside a
// delegated subtree, or ask the manager for one.
//
//   - A user's own systemd (user@UID.service, to which systemd 252 and
//     later delegate pids, memory and cpu) gives a user who is not root a
//     kernel-enforced ceiling with no extra command.
//   - The system manager gives root a scope under guardrun.slice instead
//     of the unmanaged /sys/fs/cgroup/guardrun, which systemd may
//     rearrange.
//
// The scope holds guardrun for the whole run, so it outlives every child
// and its counters are read before any group goes; it is named after the
// run (guardrun-NAME.scope), so systemd itself refuses a second run of
// the same name (ErrBusy); it goes when guardrun does: a scope ends when
// its last process has, and CollectMode=inactive-or-failed unloads it.
//
// Why go-systemd's dbus package and not cgroups v3's systemd manager: that
// one dials the system bus only and puts its scope in system.slice without
// Delegate (see the package doc).

// ScopeSlice is the slice guardrun's scopes go to: /guardrun.slice under
// the system manager, user@UID.service/guardrun.slice under a user's.
const ScopeSlice = "guardrun.slice"

// scopeTimeout bounds the dial and the job: systemd answers in
// milliseconds; a manager that does not is said, not waited on forever.
const scopeTimeout = 30 * time.Second

// ScopeError is a scope guardrun could not have from systemd, with the
// way out.
type ScopeError struct {
	Why   string
	Hints []string
}

// Error says why and the way out, for a log line that must stand alone
// (the fallback under --cgroup auto); guardrun's error line takes Why and
// Hints apart.
func (e *ScopeError) Error() string {
	if len(e.Hints) == 0 {
		return e.Why
	}
	return e.Why + "; " + strings.Join(e.Hints, "; ")
}

// scopeManager says which systemd guardrun must ask for a scope before it
// can make groups on v2: "system" for root in a cgroup systemd manages
// (one that is neither the hierarchy's root nor delegated), "user" for
// anyone else whose cgroup is not theirs to write; "" when guardrun
// already has a place of its own (v2Base).
func scopeManager(h Hierarchy) string {
	own := ownV2(h)
	switch {
	case h.V2Own == "/", delegated(own):
		return ""
	case !systemdBooted():
		return ""
	case os.Geteuid() == 0:
		return "system"
	case writable(own):
		return ""
	}
	return "user"
}

// systemdBooted reports whether systemd is the system's service manager
// (sd_booted(3): /run/systemd/system is a directory).
func systemdBooted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// ScopeUnit names the scope of run name: guardrun-NAME.scope, where a
// byte that systemd does not allow in a unit name is \xNN as
// systemd-escape writes it ("-" is allowed and kept, so api-v2 stays
// readable).
func ScopeUnit(name string) string {
	var b strings.Builder
	b.WriteString("guardrun-")
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == ':', c == '_', c == '.', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	b.WriteString(".scope")
	return b.String()
}

// enterScope asks the manager ("system" or "user") for the run's scope
// with this process in it, and waits until systemd has moved it there.
// own is the cgroup guardrun leaves.
func enterScope(manager, name string, ceiling uint64, own string) error {
	unit := ScopeUnit(name)
	if len(unit) > 255 {
		return fmt.Errorf("the run name %q makes a systemd unit name longer than 255 bytes (%s); give a shorter --name", name, unit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scopeTimeout)
	defer cancel()
	conn, err := dialManager(ctx, manager)
	if err != nil {
		return err
	}
	defer conn.Close()
	desc := "guardrun: " + name
	if ceiling > 0 {
		desc += ", ceiling " + FormatSize(ceiling)
	}
	props := []sd.Property{
		sd.PropDescription(desc),
		sd.PropSlice(ScopeSlice),
		sd.PropPids(uint32(os.Getpid())),
		{Name: "Delegate", Value: dbus.MakeVariant(true)},
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
	}
	if origin := originService(manager, own); origin != "" {
		// guardrun leaves the service that started it, which then no
		// longer holds it: a stop or restart of that service must still
		// take guardrun and its child down, whether or not guardrun is
		// its main process (ExecStart=/bin/sh -c '... guardrun ...').
		props = append(props, sd.Property{Name: "PartOf", Value: dbus.MakeVariant([]string{origin})})
	}
	who := managerWords(manager)
	job := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, unit, "fail", props, job); err != nil {
		var de dbus.Error
		if errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.UnitExists" {
			return fmt.Errorf("%w: %s already has %s", ErrBusy, who, unit)
		}
		return fmt.Errorf("ask %s for the scope %s: %w", who, unit, err)
	}
	select {
	case r := <-job:
		if r != "done" {
			return fmt.Errorf("%s's job to start the scope %s ended %q (journalctl %s-u %s says why)", who, unit, r, journalFlag(manager), unit)
		}
	case <-ctx.Done():
		return fmt.Errorf("%s did not start the scope %s within %s", who, unit, scopeTimeout)
	}
	return nil
}

// originService is the manager's service unit whose cgroup own is, or "":
// a session's scope is not one (a logout does not stop what a user left
// running, unless logind is told to), nor is a slice, nor a service of
// the other manager (a system unit with User=, for the user's systemd).
func originService(manager, own string) string {
	u := filepath.Base(own)
	if !strings.HasSuffix(u, ".service") || strings.HasPrefix(u, "user@") {
		return ""
	}
	if inUser := strings.Contains(own, "/user@"); inUser != (manager == "user") {
		return ""
	}
	return u
}

func managerWords(manager string) string {
	if manager == "user" {
		return "the user's systemd"
	}
	return "systemd"
}

func journalFlag(manager string) string {
	if manager == "user" {
		return "--user "
	}
	return ""
}

// dialManager connects to the manager: the system bus, or systemd's
// private socket where there is no bus daemon (as go-systemd's
// NewWithContext does); for a user, the session bus at
// DBUS_SESSION_BUS_ADDRESS or $XDG_RUNTIME_DIR/bus, else the user
// manager's private socket, as systemctl --user finds them. godbus's own
// session-bus lookup is not used: it launches dbus-launch when it finds
// none, and sets DBUS_SESSION_BUS_ADDRESS in guardrun's environment,
// which every child would inherit.
func dialManager(ctx context.Context, manager string) (*sd.Conn, error) {
	if manager == "system" {
		conn, err := sd.NewWithContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("connect to systemd (the system bus, then /run/systemd/private): %w", err)
		}
		return conn, nil
	}
	addr, private, err := userBus()
	if err != nil {
		return nil, err
	}
	conn, err := sd.NewConnection(func() (*dbus.Conn, error) {
		c, err := dbus.Dial(addr, dbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err = c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err == nil && !private {
			err = c.Hello() // a bus daemon wants it; the manager's own socket does not
		}
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return nil, &ScopeError{Why: fmt.Sprintf("connect to the user's systemd at %s: %v", addr, err), Hints: userBusHints()}
	}
	return conn, nil
}

// userBus finds the user manager's address.
func userBus() (addr string, private bool, err error) {
	if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" {
		return a, false, nil
	}
	rt := os.Getenv("XDG_RUNTIME_DIR")
	if rt == "" {
		return "", false, &ScopeError{
			Why:   fmt.Sprintf("no user bus to ask the user's systemd for a delegated scope: DBUS_SESSION_BUS_ADDRESS and XDG_RUNTIME_DIR are not set (su, sudo, cron and ssh without a login session set neither), and uid %d may not write its cgroup", os.Getuid()),
			Hints: userBusHints(),
		}
	}
	for _, p := range []struct {
		path    string
		private bool
	}{{filepath.Join(rt, "bus"), false}, {filepath.Join(rt, "systemd", "private"), true}} {
		if fi, err := os.Stat(p.path); err == nil && fi.Mode().Type() == os.ModeSocket {
			return "unix:path=" + p.path, p.private, nil
		}
	}
	return "", false, &ScopeError{
		Why:   fmt.Sprintf("no user bus to ask the user's systemd for a delegated scope: XDG_RUNTIME_DIR=%s holds neither bus nor systemd/private (is the user's systemd running?)", rt),
		Hints: userBusHints(),
	}
}

func userBusHints() []string {
	uid := os.Getuid()
	return []string{
		"run guardrun from a login session of this user (ssh, or `machinectl shell USER@` as root), whose systemd gives guardrun its scope",
		fmt.Sprintf("for cron, su or a service: `loginctl enable-linger USER` (as root) starts the user's systemd without a login; then export XDG_RUNTIME_DIR=/run/user/%d", uid),
		"or give guardrun a delegated scope yourself: systemd-run --user --scope -p Delegate=yes -- guardrun ...",
	}
}

// notDelegatedHint is the drop-in that delegates memory to every user's
// systemd, for a user manager that was given none.
const notDelegatedHint = "as root, delegate memory to users' systemd: mkdir -p /etc/systemd/system/user@.service.d && printf '[Service]\\nDelegate=pids memory cpu\\n' > /etc/systemd/system/user@.service.d/delegate.conf && systemctl daemon-reload; then log in again"
