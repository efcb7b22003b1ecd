package cgroup

import (
	"bufio"
	"slices"
	"strings"
)

// Hierarchy is what this host mounts, read from /proc/self/mountinfo.
type Hierarchy struct {
	V2          string   // cgroup2 mount point, "" if none
	V2Controls  []string // controllers the v2 root offers (cgroup.controllers)
	V1Memory    string   // cgroup v1 memory hierarchy mount point
	V1Pids      string   // cgroup v1 pids hierarchy mount point
	V2Own       string   // this process's v2 cgroup ("0::" line), e.g. "/" or "/system.slice/x.service"
	V1OwnMemory string   // this process's v1 memory cgroup
}

// V2Memory reports whether the unified hierarchy has the memory controller.
func (h Hierarchy) V2Memory() bool {
	return h.V2 != "" && slices.Contains(h.V2Controls, "memory")
}

// Version names the hierarchy the memory controller is bound to.
func (h Hierarchy) Version() string {
	switch {
	case h.V2Memory():
		return "v2"
	case h.V1Memory != "":
		return "v1"
	}
	return "none"
}

// Why says why no memory controller is usable; "" when one is.
func (h Hierarchy) Why() string {
	switch {
	case h.V2Memory() || h.V1Memory != "":
		return ""
	case h.V2 != "":
		return "the cgroup2 hierarchy at " + h.V2 + " has no memory controller and no cgroup v1 memory hierarchy is mounted"
	}
	return "no cgroup filesystem is mounted"
}

// Discover reads the mounts and this process's cgroups. It never fails: a
// host without cgroups is a host whose Hierarchy is empty.
func Discover() Hierarchy {
	mountinfo, _ := readText("/proc/self/mountinfo")
	h := parseMountinfo(mountinfo)
	if h.V2 != "" {
		if b, err := readText(h.V2 + "/cgroup.controllers"); err == nil {
			h.V2Controls = strings.Fields(b)
		}
	}
	cgroups, _ := readText("/proc/self/cgroup")
	h.V2Own, h.V1OwnMemory = parseProcCgroup(cgroups)
	return h
}

// parseMountinfo finds the cgroup mounts in /proc/PID/mountinfo text
// (proc_pid_mountinfo(5)): the first cgroup2 mount, and the first cgroup
// (v1) mounts whose super options name memory and pids. Lines it cannot
// read are passed over.
func parseMountinfo(text string) Hierarchy {
	var h Hierarchy
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		mnt := unescapeMount(pf[4])
		switch qf[0] {
		case "cgroup2":
			if h.V2 == "" {
				h.V2 = mnt
			}
		case "cgroup":
			opts := strings.Split(qf[2], ",")
			if slices.Contains(opts, "memory") && h.V1Memory == "" {
				h.V1Memory = mnt
			}
			if slices.Contains(opts, "pids") && h.V1Pids == "" {
				h.V1Pids = mnt
			}
		}
	}
	return h
}

// parseProcCgroup finds, in /proc/PID/cgroup text (cgroups(7)), the
// process's v2 cgroup (the "0::" line) and its v1 memory cgroup (the last
// line whose controllers include memory); "" for either that is missing.
func parseProcCgroup(text string) (v2, v1Memory string) {
	for _, line := range strings.Split(text, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
		}
		if slices.Contains(strings.Split(parts[1], ","), "memory") {
			v1Memory = parts[2]
		}
	}
	return v2, v1Memory
}

// unescapeMount undoes mountinfo's octal escapes: the kernel writes a
// space, tab, newline or backslash in a path as \040, \011, \012 or \134
// (show_mountinfo, fs/proc_namespace.c). A backslash not followed by
// three octal digits, which the kernel never writes, is kept as it is.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && octal(s[i+1]) <= 3 && octal(s[i+2]) <= 7 && octal(s[i+3]) <= 7 {
			b.WriteByte(octal(s[i+1])<<6 | octal(s[i+2])<<3 | octal(s[i+3]))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// octal is the value of an octal digit, or 8 for any other byte.
func octal(c byte) byte {
	if c < '0' || c > '7' {
		return 8
	}
	return c - '0'
}
