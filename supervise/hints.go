package supervise

import (
	"bufio"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/guardrun/guardrun/cgroup"
)

// Shares of the ceiling given to a runtime's heap, and why:
//   - Node.js: --max-old-space-size is the old generation alone; new space,
//     code, buffers and native memory live outside it, so 75% leaves the
//     rest room before the ceiling.
//   - Go: GOMEMLIMIT is a soft limit on all memory the runtime manages;
//     the Go guide suggests 5-10% headroom for what it does not, so 90%.
//   - JVM: MaxRAMPercentage, of a MaxRAM set to the ceiling (jvmHeapFlags),
//     is the Java heap alone; 75% is the common container setting (the
//     default, 25%, wastes most of a ceiling) and leaves metaspace, code
//     cache and thread stacks the rest.
const (
	nodeShare = 75
	goShare   = 90
	jvmShare  = 75
)

// nodeOver is how far over the --restart-at threshold a Node.js heap's
// limit goes, when the threshold sizes it. V8 gives up near its limit
// with its new space shrunk, so the group's working set at its death is
// about the limit itself, and was seen under it: with the limit at the
// threshold, a loaded machine's Express child died of its heap (SIGABRT)
// without ever crossing the threshold, in 2 of 7 runs of the host tests
// under load. 16 MiB over it, the working set crosses with the heap short of
// its end, and the grace has time to stop the child gracefully. It is at
// most half the room left to the ceiling, so the heap still ends before
// the kernel does. A JVM holds 30 MiB and more outside its heap, so its
// working set crosses early without it.
const nodeOver = 16 << 20

// Go's own heap death is not named. Under a cgroup ceiling the kernel's
// OOM killer ends a Go program (SIGKILL, told as oom_kill): GOMEMLIMIT is
// soft, it makes the collector work harder and never fails an allocation.
// "fatal error: out of memory" (after "runtime: out of memory: cannot
// allocate N-byte block (M in use)") comes only when mmap itself fails,
// under ulimit -v or vm.overcommit_memory=2, and the program exits 2, the
// status of every Go panic and fatal error (measured with Go 1.26 under
// ulimit -v 1500000). guardrun passes the child's stderr through
// untouched, so the line is never read, and status 2 alone names nothing.

var nodeNames = []string{"node", "nodejs", "npm", "npx", "yarn", "pnpm"}

// heapPlan is what the heap hint set for one run.
type heapPlan struct {
	env     []string // the child's environment with the hint
	notes   []string // what was set: "NODE_OPTIONS=--max-old-space-size=192 ...", one per variable
	sizing  string   // how it was sized (Event.HeapSizing): "75% of the 256 MiB ceiling"; "" when nothing was set
	runtime string   // node, go, jvm; "" when the command is none of them
	limit   uint64   // the heap limit set, in bytes; 0 when none was set
	flag    string   // the setting that limits the heap: "--max-old-space-size"; "" when guardrun set none
	from    string   // what it was sized from: "the 256 MiB ceiling"
	// dir is the diagnostic directory the runtime was pointed at: Node.js's
	// --report-directory, the JVM's OnOutOfMemoryError marker. "" when
	// guardrun set neither (the user had options of their own, or no
	// directory was given).
	dir    string
	signal string // Node's --report-signal guardrun set; "" for none
}

// asks reports whether a Node.js child was started with guardrun's
// --report-on-signal, so requestNodeReport can ask it for a report.
func (p heapPlan) asks() bool { return p.runtime == "node" && p.signal != "" && p.dir != "" }

// words says what limits the heap and who set it: "--max-old-space-size,
// set by guardrun from the 256 MiB ceiling"; "" when guardrun set nothing.
func (p heapPlan) words() string {
	if p.flag == "" {
		return ""
	}
	return p.flag + ", set by guardrun from " + p.from
}

// planHeap tells the child's runtime about the ceiling through its own
// environment variable, so it collects garbage, or dies of its own heap
// limit with a report, before the kernel kills it. What the user set is
// never overridden: not in the variable, and for Node.js and the JVM not
// on the command line either (it would win over the variable).
//
// With restartAt (--restart-at in bytes, 0 for none) the limit is sized so
// that the graceful restart comes first. A runtime's heap is part of the
// group's working set: the heap pages in use are resident, and the working
// set is more than the heap (the binary, native memory, code, stacks). So
// with a heap limit H >= restartAt, the working set has crossed the
// threshold by the time the heap can reach H, and the restart is already
// under way; with H < restartAt, the runtime could die of its heap before
// the threshold is ever seen. Hence H = max(share of the ceiling,
// restartAt), never above the ceiling, for Node.js and the JVM, whose
// limits are hard. A heap that reaches H within the grace still dies
// first; limit is returned so the supervisor can weigh that.
//
// Go's GOMEMLIMIT is the other way round: it is soft, it never ends the
// child, so it cannot pre-empt the restart; below the threshold it makes
// the collector work harder before the working set gets there, so a
// restart means live memory and not garbage that GOGC let pile up (up to
// twice the live heap). Hence GOMEMLIMIT = 90% of min(ceiling,
// restartAt). The price is collector CPU (capped by the runtime at about
// half) while live memory sits just under it, which is cheaper than a
// restart that frees nothing lasting.
//
// diagDir, when not "", is the run's directory (MakeDiagDir) that Node.js
// writes its reports into and the JVM its heap death marker.
//
// rt is the command's runtime (runtimeOf), which Prepare reads once.
func planHeap(rt string, argv, env []string, ceiling, restartAt uint64, diagDir string) heapPlan {
	p := heapPlan{env: env, runtime: rt}
	if ceiling == 0 {
		return p
	}
	get := func(k string) string {
		for _, kv := range slices.Backward(env) {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v
			}
		}
		return ""
	}
	set := func(k, v string) {
		p.env = append(slices.Clone(p.env), k+"="+v)
		p.notes = append(p.notes, k+"="+v)
	}
	switch p.runtime {
	case "node":
		opts := get("NODE_OPTIONS")
		user := opts + " " + strings.Join(argv[1:], " ")
		if containsAny(user, "--max-old-space-size", "--max_old_space_size") {
			return p
		}
		h, up := hardSize(&p, ceiling, restartAt, nodeShare, nodeOver)
		mib := h >> 20
		if up {
			mib = min((h+1<<20-1)>>20, ceiling>>20)
		}
		p.limit, p.flag = mib<<20, "--max-old-space-size"
		add := []string{fmt.Sprintf("--max-old-space-size=%d", mib)}
		// Any --report-* option of the user's means reports are theirs
		// (another directory, file name, signal): nothing is added. Node
		// says "Writing Node.js report to file: ..." on the child's
		// stderr for each report.
		if diagDir != "" && !strings.Contains(user, "--report") {
			add = append(add, nodeReportFlags(diagDir)...)
			p.dir, p.signal = diagDir, reportSignalName
		}
		set("NODE_OPTIONS", strings.TrimSpace(opts+" "+strings.Join(add, " ")))
	case "go":
		if get("GOMEMLIMIT") != "" {
			return p
		}
		base := ceiling
		p.from = "the " + cgroup.FormatSize(ceiling) + " ceiling"
		p.sizing = fmt.Sprintf("%d%% of %s", goShare, p.from)
		if restartAt > 0 && restartAt < ceiling {
			base = restartAt
			p.from = "the --restart-at threshold, " + cgroup.FormatSize(restartAt)
			p.sizing = fmt.Sprintf("%d%% of %s: a soft limit under it makes the collector work before the threshold, so a restart means live memory, not garbage",
				goShare, p.from)
		}
		p.limit, p.flag = base*goShare/100>>20<<20, "GOMEMLIMIT"
		set("GOMEMLIMIT", fmt.Sprintf("%dMiB", p.limit>>20))
	case "jvm":
		// The JVM reads all three variables, and its command line wins.
		user := strings.Join([]string{get("JAVA_TOOL_OPTIONS"), get("JDK_JAVA_OPTIONS"), get("_JAVA_OPTIONS"), strings.Join(argv[1:], " ")}, " ")
		if containsAny(user, "-Xmx", "MaxHeapSize", "MaxRAM", "RAMPercentage", "RAMFraction") {
			return p
		}
		h, _ := hardSize(&p, ceiling, restartAt, jvmShare, 0)
		// One decimal, rounded up so the heap is not under h; the JVM
		// aligns the heap up too (to 2 MiB here).
		pct := float64((h*1000+ceiling-1)/ceiling) / 10
		p.limit, p.flag = uint64(float64(ceiling)*pct/100), "-XX:MaxRAMPercentage"
		add := jvmHeapFlags(ceiling, pct)
		// An OutOfMemoryError ends only the thread it is thrown in, and a
		// JVM that lives on without it serves errors; with
		// ExitOnOutOfMemoryError it exits 3 ("Terminating due to
		// java.lang.OutOfMemoryError: Java heap space") and the restart
		// policy takes over. The marker names the death; without one,
		// exit status 3 of a java child is the only sign. Any of the
		// user's own Exit-, Crash- or OnOutOfMemoryError wins.
		if !containsAny(user, "OnOutOfMemoryError") {
			add = append(add, "-XX:+ExitOnOutOfMemoryError")
			if m, ok := jvmMarkerFlag(diagDir); ok {
				add = append(add, m)
				p.dir = diagDir
			}
		}
		set("JAVA_TOOL_OPTIONS", strings.TrimSpace(get("JAVA_TOOL_OPTIONS")+" "+strings.Join(add, " ")))
	}
	return p
}

// hardSize sizes a hard heap limit (one whose end is the runtime's death)
// as planHeap says: share% of the ceiling, or restartAt plus over (at most
// half the room left between restartAt and the ceiling) when that is more,
// never over the ceiling. It fills p's words, and says whether the size is from the
// threshold, which the runtime's unit must round up, not down.
func hardSize(p *heapPlan, ceiling, restartAt, share, over uint64) (h uint64, up bool) {
	ceil := "the " + cgroup.FormatSize(ceiling) + " ceiling"
	thr := "the --restart-at threshold, " + cgroup.FormatSize(restartAt)
	switch {
	case restartAt >= ceiling:
		p.from, p.sizing = ceil, ceil+": "+thr+", is not under it"
		return ceiling, false
	case (restartAt+over)*100 > ceiling*share:
		over = min(over, (ceiling-restartAt)/2)
		p.from, p.sizing = thr, thr+": a heap limit under it would end the child before the graceful restart"
		if over > 0 {
			p.sizing = fmt.Sprintf("%s over %s: a heap limit at it can end the child before the graceful restart", cgroup.FormatSize(over), thr)
		}
		return max(restartAt+over, ceiling*share/100), true
	}
	p.from, p.sizing = ceil, fmt.Sprintf("%d%% of %s", share, ceil)
	return ceiling * share / 100, false
}

// jvmHeapFlags sets the heap as a share of the ceiling.
//
// -XX:MaxRAM pins what the share is of: the JVM otherwise takes the
// limit of the cgroup it finds itself in, which is the ceiling under v1
// and v2 but the host's RAM without a cgroup (--cgroup none). And
// MinRAMPercentage must be set with MaxRAMPercentage: the JVM takes
// MinRAMPercentage (default 50) instead when that share of its memory is
// under its default MaxHeapSize, about 124 MiB, which is every ceiling
// under about 248 MiB (measured on Java 17: MaxRAM=128M with
// MaxRAMPercentage=75 alone gave a 64 MiB heap, with both 96 MiB).
func jvmHeapFlags(ceiling uint64, pct float64) []string {
	p := fmt.Sprintf("%.1f", pct)
	return []string{fmt.Sprintf("-XX:MaxRAM=%d", ceiling), "-XX:MinRAMPercentage=" + p, "-XX:MaxRAMPercentage=" + p}
}

func containsAny(s string, subs ...string) bool {
	return slices.ContainsFunc(subs, func(sub string) bool { return strings.Contains(s, sub) })
}

// runtimeOf tells node, go or jvm from the command: by name, by a script's
// #! line, or by the Go build information a Go binary carries.
func runtimeOf(cmd string) string {
	base := filepath.Base(cmd)
	switch {
	case slices.Contains(nodeNames, base):
		return "node"
	case base == "java":
		return "jvm"
	}
	path, err := exec.LookPath(cmd)
	if err != nil {
		return ""
	}
	if _, err := buildinfo.ReadFile(path); err == nil {
		return "go"
	}
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	if rest, ok := strings.CutPrefix(line, "#!"); ok {
		for _, w := range strings.Fields(rest) {
			if slices.Contains(nodeNames, filepath.Base(w)) {
				return "node"
			}
		}
	}
	return ""
}
