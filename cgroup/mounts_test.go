package cgroup

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestUnescapeMount(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory"},
		{"", ""},
		// The four bytes the kernel escapes (show_mountinfo).
		{`/mnt/my\040cgroups`, "/mnt/my cgroups"},
		{`/mnt/tab\011here`, "/mnt/tab\there"},
		{`/mnt/new\012line`, "/mnt/new\nline"},
		{`/mnt/back\134slash`, `/mnt/back\slash`},
		{`\040leading`, " leading"},
		{`trailing\040`, "trailing "},
		{`\040`, " "},
		{`/a\040\040b`, "/a  b"},
		{`/a\134040`, `/a\040`}, // an escaped backslash, then digits
		{`/mnt/a\040-\040b`, "/mnt/a - b"},
		// What the kernel never writes is kept as it is.
		{`/mnt/x\`, `/mnt/x\`},
		{`/mnt/x\04`, `/mnt/x\04`},
		{`/mnt/x\0a0`, `/mnt/x\0a0`},
		{`/mnt/x\400`, `/mnt/x\400`}, // over \377
		{`/mnt/x\9ab`, `/mnt/x\9ab`},
	} {
		if got := unescapeMount(tc.in); got != tc.want {
			t.Errorf("unescapeMount(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// thisHostMountinfo is the cgroup part of this host's /proc/self/mountinfo
// (v1 controllers under a tmpfs, cgroup2 at unified), with the lines
// around it.
const thisHostMountinfo = `22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
23 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       Hierarchy
	}{
		{"this host", thisHostMountinfo, Hierarchy{
			V2: "/sys/fs/cgroup/unified", V1Memory: "/sys/fs/cgroup/memory", V1Pids: "/sys/fs/cgroup/pids"}},
		{"unified only, with optional fields (systemd)",
			"25 20 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
			Hierarchy{V2: "/sys/fs/cgroup"}},
		{"several optional fields",
			"30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:12 master:3 propagate_from:2 - cgroup cgroup rw,nosuid,nodev,noexec,relatime,memory\n",
			Hierarchy{V1Memory: "/sys/fs/cgroup/memory"}},
		{"memory and pids on one hierarchy",
			"30 25 0:26 / /cg/mp rw - cgroup none rw,pids,memory\n",
			Hierarchy{V1Memory: "/cg/mp", V1Pids: "/cg/mp"}},
		{"a mount point with spaces and a dash",
			`30 25 0:26 / /mnt/my\040cgroups\040-\040v1 rw - cgroup cgroup rw,memory` + "\n",
			Hierarchy{V1Memory: "/mnt/my cgroups - v1"}},
		{"the first mount of each wins (a bind mount after it)",
			"30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
				"31 25 0:26 / /container/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
				"32 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n" +
				"33 25 0:27 /sub /container/sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			Hierarchy{V2: "/sys/fs/cgroup/unified", V1Memory: "/sys/fs/cgroup/memory"}},
		{"a named hierarchy is no controller",
			"40 31 0:37 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,name=memory\n" +
				"41 31 0:38 / /sys/fs/cgroup/pidsx rw - cgroup cgroup rw,xpids\n",
			Hierarchy{}},
		{"controllers in the per-mount options do not count",
			"35 31 0:32 / /sys/fs/cgroup/memory rw,memory - cgroup cgroup rw,cpu\n",
			Hierarchy{}},
		{"lines it cannot read are passed over",
			"\n" +
				"garbage\n" +
				"35 31 0:32 / /sys/fs/cgroup/memory rw cgroup cgroup rw,memory\n" + // no separator
				"35 31 0:32 / - cgroup cgroup rw,memory\n" + // too few fields before it
				"35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup\n" + // too few after it
				"39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n",
			Hierarchy{V1Pids: "/sys/fs/cgroup/pids"}},
		{"no trailing newline",
			"41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw",
			Hierarchy{V2: "/sys/fs/cgroup"}},
		{"nothing mounted", "", Hierarchy{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseMountinfo(tc.text); !sameHierarchy(got, tc.want) {
				t.Errorf("parseMountinfo:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func sameHierarchy(a, b Hierarchy) bool {
	return a.V2 == b.V2 && slices.Equal(a.V2Controls, b.V2Controls) && a.V1Memory == b.V1Memory &&
		a.V1Pids == b.V1Pids && a.V2Own == b.V2Own && a.V1OwnMemory == b.V1OwnMemory
}

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		name, text   string
		v2, v1Memory string
	}{
		{"this host", "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/97d4\n1:cpu:/\n0::/\n", "/", "/process_api/97d4"},
		{"unified only", "0::/user.slice/user-1000.slice/session-2.scope\n", "/user.slice/user-1000.slice/session-2.scope", ""},
		{"memory with other controllers", "5:pids,memory:/docker/abc\n0::/docker/abc\n", "/docker/abc", "/docker/abc"},
		{"a colon in the path", "0::/a:b:c\n4:memory:/x:y\n", "/a:b:c", "/x:y"},
		{"a named hierarchy is no controller", "1:name=memory:/x\n", "", ""},
		{"no trailing newline", "0::/init.scope", "/init.scope", ""},
		{"lines it cannot read are passed over", "\ngarbage\n4:memory\n0::/ok\n", "/ok", ""},
		{"nothing", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v2, v1 := parseProcCgroup(tc.text)
			if v2 != tc.v2 || v1 != tc.v1Memory {
				t.Errorf("parseProcCgroup = %q, %q; want %q, %q", v2, v1, tc.v2, tc.v1Memory)
			}
		})
	}
}

// Discover on this machine, checked against what the kernel says
// otherwise: each mount it found has the filesystem's magic and the
// files of its controller, and this process is listed in the groups it
// says this process is in. Needs no root.
func TestDiscoverOnThisHost(t *testing.T) {
	h := Discover()
	t.Logf("%+v: %s", h, h.Version())
	magic := func(dir string, want int64) {
		t.Helper()
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if st.Type != want {
			t.Errorf("%s has filesystem magic %#x, want %#x", dir, st.Type, want)
		}
	}
	has := func(dir, file string) {
		t.Helper()
		if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
			t.Errorf("%s has no %s: %v", dir, file, err)
		}
	}
	holdsMe := func(dir string) {
		t.Helper()
		pids, err := readPids(filepath.Join(dir, cgroupProcs))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(pids, os.Getpid()) {
			t.Errorf("%s does not list this process (%d)", filepath.Join(dir, cgroupProcs), os.Getpid())
		}
	}
	if h.V2 != "" {
		magic(h.V2, unix.CGROUP2_SUPER_MAGIC)
		b, err := os.ReadFile(filepath.Join(h.V2, v2Controllers))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(b)); !slices.Equal(h.V2Controls, got) {
			t.Errorf("V2Controls %q, but %s reads %q", h.V2Controls, h.V2, got)
		}
		if h.V2Own == "" {
			t.Errorf("a cgroup2 mount at %s, but no 0:: line for this process", h.V2)
		} else {
			holdsMe(filepath.Join(h.V2, h.V2Own))
		}
	}
	if h.V1Memory != "" {
		magic(h.V1Memory, unix.CGROUP_SUPER_MAGIC)
		has(h.V1Memory, v1Limit)
		holdsMe(filepath.Join(h.V1Memory, h.V1OwnMemory))
	}
	if h.V1Pids != "" {
		magic(h.V1Pids, unix.CGROUP_SUPER_MAGIC)
		has(h.V1Pids, "cgroup.procs")
		if h.V1Pids != h.V1Memory {
			if _, err := os.Stat(filepath.Join(h.V1Pids, v1Limit)); err == nil {
				t.Errorf("%s, the pids hierarchy, has the memory controller too, but Discover says memory is at %s", h.V1Pids, h.V1Memory)
			}
		}
	}
	// The mounts Discover did not report are not cgroup mounts of the
	// kind it looks for: each cgroup filesystem in /proc/self/mounts
	// (another rendering of the same table) is one it found, or one
	// without memory or pids, or a later mount of the same.
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{h.V2: true, h.V1Memory: true, h.V1Pids: true}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "cgroup" && f[2] != "cgroup2" {
			continue
		}
		kind := f[2]
		if kind == "cgroup" {
			opts := strings.Split(f[3], ",")
			switch {
			case slices.Contains(opts, "memory"):
				kind = "memory"
			case slices.Contains(opts, "pids"):
				kind = "pids"
			default:
				continue
			}
		}
		if mnt := unescapeMount(f[1]); !seen[kind] && !found[mnt] {
			t.Errorf("%s is the first %s mount in /proc/self/mounts, and Discover did not find it", mnt, kind)
		}
		seen[kind] = true
	}
	switch v := h.Version(); {
	case v == "none" && h.Why() == "":
		t.Error("no memory controller, and Why says nothing")
	case v != "none" && h.Why() != "":
		t.Errorf("memory controller on %s, and Why says %q", v, h.Why())
	}
}
