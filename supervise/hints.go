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
)

// Shares of the ceiling given to a runtime's heap, and why:
//   - Node.js: --max-old-space-size is the old generation alone; new space,
//     code, buffers and native memory live outside it, so 75% leaves the
//     rest room before the ceiling.
//   - Go: GOMEMLIMIT is a soft limit on all memory the runtime manages;
//     the Go guide suggests 5-10% headroom for what it does not, so 90%.
//   - JVM: MaxRAMPercentage applies to the limit the JVM reads from the
//     cgroup itself; 75% is the common container setting (the default, 25%,
//     wastes most of a ceiling).
const (
	nodeShare = 75
	goShare   = 90
	jvmShare  = 75
)

var nodeNames = []string{"node", "nodejs", "npm", "npx", "yarn", "pnpm"}

// heapHints tells the child's runtime about the ceiling through its own
// environment variable, so it collects garbage before the kernel kills it.
// What the user set is never overridden. It returns the new environment
// and one note per variable it set.
func heapHints(argv, env []string, ceiling uint64) ([]string, []string) {
	get := func(k string) (string, bool) {
		for _, kv := range slices.Backward(env) {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	set := func(k, v string) string {
		env = append(slices.Clone(env), k+"="+v)
		return k + "=" + v
	}
	var notes []string
	switch runtimeOf(argv[0]) {
	case "node":
		opts, _ := get("NODE_OPTIONS")
		if !strings.Contains(opts, "--max-old-space-size") {
			mib := ceiling * nodeShare / 100 >> 20
			notes = append(notes, set("NODE_OPTIONS", strings.TrimSpace(opts+fmt.Sprintf(" --max-old-space-size=%d", mib))))
		}
	case "go":
		if _, ok := get("GOMEMLIMIT"); !ok {
			notes = append(notes, set("GOMEMLIMIT", fmt.Sprintf("%dMiB", ceiling*goShare/100>>20)))
		}
	case "jvm":
		opts, _ := get("JAVA_TOOL_OPTIONS")
		if !strings.Contains(opts, "MaxRAM") && !strings.Contains(opts, "-Xmx") {
			notes = append(notes, set("JAVA_TOOL_OPTIONS", strings.TrimSpace(opts+fmt.Sprintf(" -XX:MaxRAMPercentage=%d.0", jvmShare))))
		}
	}
	return env, notes
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
