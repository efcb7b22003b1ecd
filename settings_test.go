package main

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestPsiTrigger(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		// The kernel's form: stall and window in microseconds (psi.rst).
		{in: "some:10%/1s", want: "some 100000 1000000"},
		{in: "full:10%/1s", want: "full 100000 1000000"},
		{in: "some:0.5%/2s", want: "some 10000 2000000"},
		{in: "full:12.5%/1.5s", want: "full 187500 1500000"},
		// The ends the kernel takes: windows of 500ms and 10s, 100%.
		{in: "full:50%/500ms", want: "full 250000 500000"},
		{in: "some:100%/10s", want: "some 10000000 10000000"},
		{in: "some:1%/10000ms", want: "some 100000 10000000"},

		{in: "", err: "not of the form some|full:PCT/WINDOW"},
		{in: "some", err: "not of the form some|full:PCT/WINDOW"},
		{in: "some:10%", err: "not of the form some|full:PCT/WINDOW"},
		{in: "some10%/1s", err: "not of the form some|full:PCT/WINDOW"},
		{in: "both:10%/1s", err: "not of the form some|full:PCT/WINDOW"},
		{in: "SOME:10%/1s", err: "not of the form some|full:PCT/WINDOW"},
		{in: "some:10/1s", err: "not of the form some|full:PCT/WINDOW"},
		{in: "some:10%:1s", err: "not of the form some|full:PCT/WINDOW"},

		{in: "some:0%/1s", err: "the percentage must be above 0 and at most 100"},
		{in: "some:-5%/1s", err: "the percentage must be above 0 and at most 100"},
		{in: "some:100.1%/1s", err: "the percentage must be above 0 and at most 100"},
		{in: "some:Inf%/1s", err: "the percentage must be above 0 and at most 100"},
		{in: "some:NaN%/1s", err: "the percentage must be above 0 and at most 100"},
		{in: "some:0.00001%/1s", err: "0.00001% of 1s is under a microsecond, the kernel's least stall"},
		{in: "some:%/1s", err: "the percentage must be above 0 and at most 100"},
		{in: "some:ten%/1s", err: "the percentage must be above 0 and at most 100"},

		{in: "some:10%/499ms", err: "the window must be a duration from 500ms to 10s"},
		{in: "some:10%/10001ms", err: "the window must be a duration from 500ms to 10s"},
		{in: "some:10%/1m", err: "the window must be a duration from 500ms to 10s"},
		{in: "some:10%/-1s", err: "the window must be a duration from 500ms to 10s"},
		{in: "some:10%/1", err: "the window must be a duration from 500ms to 10s"},
		{in: "some:10%/", err: "the window must be a duration from 500ms to 10s"},
		{in: "some:10%/1s/2s", err: "the window must be a duration from 500ms to 10s"},
	} {
		got, err := psiTrigger(tc.in)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if got != tc.want || msg != tc.err {
			t.Errorf("psiTrigger(%q) = %q, %q; want %q, %q", tc.in, got, msg, tc.want, tc.err)
		}
	}
}

// TestCredentialNeedsRoot resolves USER[:GROUP] against this host's users
// and groups: names and numbers, with and without a passwd entry.
func TestCredentialNeedsRoot(t *testing.T) {
	requireRoot(t, "credential resolves a user only for root")
	// A uid and a gid that no entry has: a minimal container's.
	const free = 54321
	if _, err := user.LookupId(strconv.Itoa(free)); err == nil {
		t.Fatalf("uid %d has a passwd entry here; the test needs one that has none", free)
	}
	if _, err := user.LookupGroupId(strconv.Itoa(free)); err == nil {
		t.Fatalf("gid %d has a group entry here; the test needs one that has none", free)
	}
	type row struct {
		spec string
		want *syscall.Credential // with err "", else nil
		err  string
	}
	cred := func(uid, gid uint32) *syscall.Credential {
		return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
	}
	rows := []row{
		{spec: fmt.Sprintf("%d:%d", free, free), want: cred(free, free)},
		{spec: fmt.Sprintf("%d:0", free), want: cred(free, 0)},
		{spec: strconv.Itoa(free), err: fmt.Sprintf("uid %d has no passwd entry, so no group; give one: --user %d:GID", free, free)},
		{spec: fmt.Sprintf("%d:guardrun-no-such-group", free), err: `no such group "guardrun-no-such-group"`},
		{spec: "guardrun-no-such-user", err: "no such user"},
		{spec: "guardrun-no-such-user:0", err: "no such user"},
		{spec: "", err: "no such user"},
		{spec: ":0", err: "no such user"},
		{spec: "-1:0", err: "no such user"},
		// Above 32 bits is no id, not one wrapped to 0, root: cgo's
		// getpwuid and getgrgid take a uid_t and a gid_t.
		{spec: "4294967296:0", err: "uid 4294967296 is out of range: ids go from 0 to 4294967294"},
		{spec: fmt.Sprintf("%d:4294967296", free), err: "gid 4294967296 is out of range: ids go from 0 to 4294967294"},
	}
	// The host's nobody (Debian's 65534:65534, group nogroup). The VM has
	// no /etc/passwd: there the same specs meet the errors of a user
	// without an entry, which is what guardrun must say there.
	if u, err := user.Lookup("nobody"); err == nil {
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		nobody := cred(uint32(uid), uint32(gid))
		rows = append(rows,
			row{spec: "nobody", want: nobody},
			row{spec: u.Uid, want: nobody}, // a number with an entry takes its group
			row{spec: "nobody:" + u.Gid, want: nobody},
			row{spec: fmt.Sprintf("nobody:%d", free), want: cred(uint32(uid), free)},
			row{spec: "nobody:0", want: cred(uint32(uid), 0)},
			row{spec: "nobody:guardrun-no-such-group", err: `no such group "guardrun-no-such-group"`},
			row{spec: "nobody:", err: `no such group ""`},
		)
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			rows = append(rows, row{spec: "nobody:" + g.Name, want: nobody})
		}
	} else {
		t.Logf("no passwd entry for nobody (%v): its specs take the errors of a user without one", err)
		rows = append(rows,
			row{spec: "nobody", err: "no such user"},
			row{spec: "65534", err: "uid 65534 has no passwd entry, so no group; give one: --user 65534:GID"},
			row{spec: "65534:65534", want: cred(65534, 65534)},
		)
	}
	for _, tc := range rows {
		got, err := credential(tc.spec)
		switch {
		case tc.err != "" && (err == nil || err.Error() != tc.err):
			t.Errorf("credential(%q) = %+v, %v; want error %q", tc.spec, got, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("credential(%q): %v; want %+v", tc.spec, err, tc.want)
		case tc.err == "" && (got.Uid != tc.want.Uid || got.Gid != tc.want.Gid || !slices.Equal(got.Groups, tc.want.Groups) || got.Groups == nil || got.NoSetGroups):
			// Groups must be set, empty or the user's own: never root's,
			// which the child would keep without setgroups.
			t.Errorf("credential(%q) = %+v; want %+v", tc.spec, got, tc.want)
		}
	}
}

// TestCredentialRefusedWithoutRoot: only root can run a child as another
// user, and anyone else is told so before a lookup, even of a user that
// exists. As root, guardrun (this test binary) runs as nobody.
func TestCredentialRefusedWithoutRoot(t *testing.T) {
	const refusal = "only root can run a child as another user"
	if os.Geteuid() != 0 {
		for _, spec := range []string{"nobody", "65534:65534", "root", "guardrun-no-such-user", ""} {
			if got, err := credential(spec); err == nil || err.Error() != refusal {
				t.Errorf("credential(%q) as uid %d = %+v, %v; want %q", spec, os.Geteuid(), got, err, refusal)
			}
		}
		return
	}
	dir, exe := exeForAll(t)
	ran := filepath.Join(dir, "ran")
	c := guardrunCmd(exe, []string{"--user", "65534:65534"}, "touch", ran)
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := c.CombinedOutput()
	want := "guardrun: error: --user 65534:65534: " + refusal + "\n"
	if c.ProcessState.ExitCode() != 125 || !strings.HasPrefix(string(out), want) {
		t.Fatalf("--user as nobody: exit %d, output:\n%s\nwant 125 and %q first", c.ProcessState.ExitCode(), out, want)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Fatal("the child ran")
	}
}

// requireRoot skips a test that needs root, or fails it when
// GUARDRUN_TEST_REQUIRE=1 (set by .ci/run and the VM), so nothing skips
// silently in CI.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("GUARDRUN_TEST_REQUIRE") == "1" {
		t.Fatalf("needs root (%s), and GUARDRUN_TEST_REQUIRE=1 forbids skipping", why)
	}
	t.Skipf("needs root: %s", why)
}
