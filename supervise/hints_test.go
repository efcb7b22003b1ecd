package supervise

import (
	"os"
	"strings"
	"testing"
)

func TestPlanHeap(t *testing.T) {
	self, _ := os.Executable()
	const (
		mib     = 1 << 20
		ceiling = 1 << 30
		dir     = "/tmp/guardrun-api-1"
	)
	reports := " --report-on-fatalerror --report-directory=" + dir + " --report-on-signal --report-signal=SIGURG"
	var c float64 = ceiling
	jvm899 := uint64(c * 89.9 / 100)
	jvm75 := "-XX:MaxRAM=1073741824 -XX:MinRAMPercentage=75.0 -XX:MaxRAMPercentage=75.0"
	for _, tc := range []struct {
		name      string
		argv      []string
		env       string
		restartAt uint64
		dir       string
		// want is the variable set, "" for none; sizing, limit and
		// diag (the plan's dir) what the plan says of it.
		want, sizing string
		limit        uint64
		diag         string
	}{
		{name: "node share", argv: []string{"node", "app.js"},
			want: "NODE_OPTIONS=--max-old-space-size=768", sizing: "75% of the 1 GiB ceiling", limit: 768 * mib},
		{name: "node threshold over the share", argv: []string{"node"}, restartAt: 900 * mib,
			want:   "NODE_OPTIONS=--max-old-space-size=916",
			sizing: "16 MiB over the --restart-at threshold, 900 MiB: a heap limit at it can end the child before the graceful restart", limit: 916 * mib},
		{name: "node threshold rounds up to a MiB", argv: []string{"node"}, restartAt: 900*mib + 1,
			want: "NODE_OPTIONS=--max-old-space-size=917", sizing: "16 MiB over the --restart-at threshold, 900 MiB: a heap limit at it can end the child before the graceful restart", limit: 917 * mib},
		{name: "node threshold under the share", argv: []string{"node"}, restartAt: 500 * mib,
			want: "NODE_OPTIONS=--max-old-space-size=768", sizing: "75% of the 1 GiB ceiling", limit: 768 * mib},
		{name: "node threshold at the ceiling", argv: []string{"node"}, restartAt: ceiling,
			want: "NODE_OPTIONS=--max-old-space-size=1024", sizing: "the 1 GiB ceiling: the --restart-at threshold, 1 GiB, is not under it", limit: ceiling},
		{name: "node reports", argv: []string{"node"}, dir: dir,
			want: "NODE_OPTIONS=--max-old-space-size=768" + reports, sizing: "75% of the 1 GiB ceiling", limit: 768 * mib, diag: dir},
		{name: "node reports into a dir with a space", argv: []string{"node"}, dir: "/tmp/a b",
			want:   `NODE_OPTIONS=--max-old-space-size=768 --report-on-fatalerror --report-directory="/tmp/a b" --report-on-signal --report-signal=SIGURG`,
			sizing: "75% of the 1 GiB ceiling", limit: 768 * mib, diag: "/tmp/a b"},
		{name: "user's options are kept", argv: []string{"/usr/bin/npm", "start"}, env: "NODE_OPTIONS=--inspect", dir: dir,
			want: "NODE_OPTIONS=--inspect --max-old-space-size=768" + reports, sizing: "75% of the 1 GiB ceiling", limit: 768 * mib, diag: dir},
		{name: "user's --report-directory", argv: []string{"node"}, env: "NODE_OPTIONS=--report-directory=/var/r", dir: dir,
			want: "NODE_OPTIONS=--report-directory=/var/r --max-old-space-size=768", sizing: "75% of the 1 GiB ceiling", limit: 768 * mib},
		{name: "user's --report-on-signal", argv: []string{"node", "--report-on-signal", "app.js"}, dir: dir,
			want: "NODE_OPTIONS=--max-old-space-size=768", sizing: "75% of the 1 GiB ceiling", limit: 768 * mib},
		{name: "user's heap", argv: []string{"node"}, env: "NODE_OPTIONS=--max-old-space-size=100", dir: dir, restartAt: 900 * mib},
		{name: "user's heap, V8's spelling", argv: []string{"node"}, env: "NODE_OPTIONS=--max_old_space_size=100", dir: dir},
		{name: "user's heap on the command line", argv: []string{"node", "--max-old-space-size=300", "app.js"}, dir: dir},

		{name: "go", argv: []string{self}, restartAt: 0, want: "GOMEMLIMIT=921MiB", sizing: "90% of the 1 GiB ceiling", limit: 921 * mib},
		{name: "go under the threshold", argv: []string{self}, restartAt: 800 * mib, dir: dir, want: "GOMEMLIMIT=720MiB",
			sizing: "90% of the --restart-at threshold, 800 MiB: a soft limit under it makes the collector work before the threshold, so a restart means live memory, not garbage",
			limit:  720 * mib},
		{name: "go user's", argv: []string{self}, env: "GOMEMLIMIT=1GiB"},

		{name: "jvm", argv: []string{"java", "-jar", "app.jar"},
			want: "JAVA_TOOL_OPTIONS=" + jvm75 + " -XX:+ExitOnOutOfMemoryError", sizing: "75% of the 1 GiB ceiling", limit: 768 * mib},
		{name: "jvm marker", argv: []string{"java"}, dir: dir,
			want:   "JAVA_TOOL_OPTIONS=" + jvm75 + ` -XX:+ExitOnOutOfMemoryError -XX:OnOutOfMemoryError=": > /tmp/guardrun-api-1/jvm-heap-oom.%p"`,
			sizing: "75% of the 1 GiB ceiling", limit: 768 * mib, diag: dir},
		{name: "jvm threshold", argv: []string{"java"}, restartAt: 920 * mib,
			want:   "JAVA_TOOL_OPTIONS=-XX:MaxRAM=1073741824 -XX:MinRAMPercentage=89.9 -XX:MaxRAMPercentage=89.9 -XX:+ExitOnOutOfMemoryError",
			sizing: "the --restart-at threshold, 920 MiB: a heap limit under it would end the child before the graceful restart", limit: jvm899},
		{name: "jvm no marker in a dir a shell would split", argv: []string{"java"}, dir: "/tmp/a b",
			want: "JAVA_TOOL_OPTIONS=" + jvm75 + " -XX:+ExitOnOutOfMemoryError", sizing: "75% of the 1 GiB ceiling", limit: 768 * mib},
		{name: "jvm user's OOM action", argv: []string{"java"}, env: "JAVA_TOOL_OPTIONS=-XX:+CrashOnOutOfMemoryError", dir: dir,
			want: "JAVA_TOOL_OPTIONS=-XX:+CrashOnOutOfMemoryError " + jvm75, sizing: "75% of the 1 GiB ceiling", limit: 768 * mib},
		{name: "jvm user's heap", argv: []string{"java"}, env: "JAVA_TOOL_OPTIONS=-Xmx2g"},
		{name: "jvm user's heap in JDK_JAVA_OPTIONS", argv: []string{"java"}, env: "JDK_JAVA_OPTIONS=-XX:MaxRAMPercentage=50"},
		{name: "jvm user's heap on the command line", argv: []string{"java", "-Xmx512m", "Main"}},

		{name: "not a runtime", argv: []string{"/bin/sh", "-c", "true"}, dir: dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := []string{"PATH=/usr/bin"}
			if tc.env != "" {
				env = append(env, tc.env)
			}
			p := planFor(tc.argv, env, ceiling, tc.restartAt, tc.dir)
			if got := strings.Join(p.notes, " "); got != tc.want {
				t.Errorf("set %q\nwant %q", got, tc.want)
			}
			if tc.want == "" && len(p.env) != len(env) {
				t.Errorf("env %q; want the user's untouched", p.env)
			}
			if tc.want != "" && p.env[len(p.env)-1] != tc.want {
				t.Errorf("env ends %q, want %q", p.env[len(p.env)-1], tc.want)
			}
			if len(env) > 1 && env[1] != tc.env {
				t.Errorf("the caller's env was changed: %q", env)
			}
			if p.sizing != tc.sizing {
				t.Errorf("sizing %q\nwant   %q", p.sizing, tc.sizing)
			}
			if p.limit != tc.limit {
				t.Errorf("limit %d MiB, want %d MiB", p.limit/mib, tc.limit/mib)
			}
			if p.dir != tc.diag {
				t.Errorf("dir %q, want %q", p.dir, tc.diag)
			}
			if asks := p.runtime == "node" && tc.diag != ""; p.asks() != asks {
				t.Errorf("asks() = %v, want %v", p.asks(), asks)
			}
			if (p.words() == "") != (tc.want == "") {
				t.Errorf("words() = %q with %q set", p.words(), tc.want)
			}
		})
	}
}

func TestPlanHeapWords(t *testing.T) {
	for _, tc := range []struct {
		argv      string
		restartAt uint64
		want      string
	}{
		{"node", 0, "--max-old-space-size, set by guardrun from the 256 MiB ceiling"},
		{"node", 230 << 20, "--max-old-space-size, set by guardrun from the --restart-at threshold, 230 MiB"},
		{"java", 0, "-XX:MaxRAMPercentage, set by guardrun from the 256 MiB ceiling"},
		{"/bin/sh", 0, ""},
	} {
		if got := planFor([]string{tc.argv}, nil, 256<<20, tc.restartAt, "").words(); got != tc.want {
			t.Errorf("%s with --restart-at %d: %q, want %q", tc.argv, tc.restartAt, got, tc.want)
		}
	}
	p := planFor([]string{"node"}, nil, 256<<20, 230<<20, "")
	// Half the 26 MiB left to the ceiling, under the 16 MiB nodeOver.
	if want := "13 MiB over the --restart-at threshold, 230 MiB: a heap limit at it can end the child before the graceful restart"; p.sizing != want {
		t.Errorf("sizing %q, want %q", p.sizing, want)
	}
}

// planFor is planHeap with the command's runtime read from argv, as
// Prepare reads it.
func planFor(argv, env []string, ceiling, restartAt uint64, diagDir string) heapPlan {
	return planHeap(runtimeOf(argv[0]), argv, env, ceiling, restartAt, diagDir)
}

// hintsFor is planFor without --restart-at or a diagnostic directory:
// the environment and the notes.
func hintsFor(argv, env []string, ceiling uint64) ([]string, []string) {
	p := planFor(argv, env, ceiling, 0, "")
	return p.env, p.notes
}
