package observe

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/cgroup"
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
	size := cgroup.FormatSize
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
	peak := size(r.Peak)
	if r.Ceiling > 0 {
		peak = fmt.Sprintf("%s of %s (%.0f%%)", size(r.Peak), size(r.Ceiling), 100*float64(r.Peak)/float64(r.Ceiling))
	}
	fmt.Fprintf(&b, "| peak memory | %s |\n", peak)
	if line := sparkline(r.Samples, 40); line != "" {
		fmt.Fprintf(&b, "| memory over time | `%s` |\n", line)
	}
	fmt.Fprintf(&b, "| restarts | %d |\n", r.Restarts)
	if n := count(r.Events, "oom_kill"); n > 0 {
		fmt.Fprintf(&b, "| OOM kills | %d |\n", n)
	}
	if !r.Ended.IsZero() {
		fmt.Fprintf(&b, "| ran | %s |\n", r.Ended.Sub(r.Started).Round(100*time.Millisecond))
	}
	b.WriteString("\n")
	return b.String()
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
