package observe

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
)

// AppendStepSummary appends a short Markdown summary of the run to path,
// GitHub Actions' $GITHUB_STEP_SUMMARY: what a reviewer of a CI build
// wants at a glance, peak against ceiling, how it ended, restarts. The
// file is opened with O_NOFOLLOW: it is appended to, never replaced, so a
// symlink there must not lead elsewhere.
func AppendStepSummary(path string, r *Report) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return fmt.Errorf("append to %q: %w", path, err)
	}
	if _, err := f.WriteString(StepSummary(r)); err != nil {
		f.Close()
		return fmt.Errorf("append to %q: %w", path, err)
	}
	return f.Close()
}

// StepSummary is the Markdown AppendStepSummary writes.
func StepSummary(r *Report) string {
	var b strings.Builder
	verdict := "✅"
	if r.Exit == nil || r.Exit.Code != 0 {
		verdict = "❌"
	}
	fmt.Fprintf(&b, "### %s guardrun: %s\n\n", verdict, r.Run)
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| command | `%s` |\n", strings.ReplaceAll(strings.Join(r.Command, " "), "`", "'"))
	if r.Exit != nil {
		fmt.Fprintf(&b, "| result | %s (exit %d) |\n", mdEscape(r.Exit.Message), r.Exit.Code)
	}
	// The peaks are the run's, the highest of all its children: the
	// result line above speaks of the last child only.
	fmt.Fprintf(&b, "| peak memory | %s |\n", ofCeiling(r.Peak, r.Ceiling))
	if r.PeakWorkingSet > 0 && r.PeakWorkingSet != r.Peak {
		fmt.Fprintf(&b, "| peak working set | %s |\n", ofCeiling(r.PeakWorkingSet, r.Ceiling))
	}
	if line := sparkline(r.Samples, 40); line != "" {
		fmt.Fprintf(&b, "| memory over time | `%s` |\n", line)
	}
	restarts := fmt.Sprint(r.Restarts)
	if n := count(r.Events, "memory_restart"); n > 0 {
		restarts += fmt.Sprintf(" (%d by guardrun before the ceiling)", n)
	}
	fmt.Fprintf(&b, "| restarts | %s |\n", restarts)
	if n, what := heapOOMs(r); n > 0 {
		fmt.Fprintf(&b, "| heap OOMs | %d: %s |\n", n, mdEscape(what))
	}
	if n, what := oomKills(r); n > 0 {
		fmt.Fprintf(&b, "| OOM kills | %d: %s |\n", n, mdEscape(what))
	}
	if !r.Ended.IsZero() {
		fmt.Fprintf(&b, "| ran | %s |\n", r.Ended.Sub(r.Started).Round(100*time.Millisecond))
	}
	b.WriteString("\n")
	return b.String()
}

// ofCeiling is "1.5 GiB of 2 GiB (75%)", or the size alone without a
// ceiling.
func ofCeiling(v, ceiling uint64) string {
	size := cgroup.FormatSize
	if ceiling == 0 {
		return size(v)
	}
	return fmt.Sprintf("%s of %s (%.0f%%)", size(v), size(ceiling), 100*float64(v)/float64(ceiling))
}

// heapOOMs counts the run's heap OOMs and says, from the last, which heap
// ran out: "died of its JavaScript heap (192 MiB)".
func heapOOMs(r *Report) (int, string) {
	n, what := 0, ""
	for _, m := range r.Events {
		if m.Kind != "heap_oom" {
			continue
		}
		n++
		what = "died of its " + (&supervise.RuntimeReport{Runtime: m.Runtime}).HeapName()
		if m.HeapLimit > 0 {
			what += " (" + cgroup.FormatSize(m.HeapLimit) + ")"
		}
	}
	return n, what
}

// oomKills counts the run's OOM kills, one per oom_kill event, and says
// who killed and, when the kernel's lines named them, how many were
// workers of a child that lived on.
func oomKills(r *Report) (int, string) {
	n, workers := 0, 0
	for _, m := range r.Events {
		if m.Kind != "oom_kill" {
			continue
		}
		n++
		if m.Victim != nil && m.Pid != 0 && m.Victim.Pid != m.Pid {
			workers++
		}
	}
	what := "killed by the kernel OOM killer"
	if r.Backend == "none" {
		what = "killed by guardrun (no cgroup: sampled RSS)"
	}
	switch {
	case workers == 0:
	case workers == n && n == 1:
		what += " (a worker)"
	case workers == n:
		what += " (all workers)"
	case workers == 1:
		what += " (1 of them a worker)"
	default:
		what += fmt.Sprintf(" (%d of them workers)", workers)
	}
	return n, what
}

func count(ms []Mark, kind string) int {
	n := 0
	for _, m := range ms {
		if m.Kind == kind {
			n++
		}
	}
	return n
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// sparkline draws usage as up to width block characters, each the highest
// sample of its slice of the run, scaled to the run's own peak.
func sparkline(s []Point, width int) string {
	if len(s) < 2 {
		return ""
	}
	blocks := []rune("▁▂▃▄▅▆▇█")
	var top uint64
	for _, p := range s {
		top = max(top, p.Usage)
	}
	if top == 0 {
		return ""
	}
	n := min(width, len(s))
	out := make([]rune, n)
	for i := range n {
		var hi uint64
		for _, p := range s[i*len(s)/n : (i+1)*len(s)/n] {
			hi = max(hi, p.Usage)
		}
		out[i] = blocks[int(hi*uint64(len(blocks)-1)/top)]
	}
	return string(out)
}
