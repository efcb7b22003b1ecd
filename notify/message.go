package notify

import (
	"fmt"
	"time"

	"github.com/guardrun/guardrun/supervise"
)

// This file has notify's own words: severities and the names of the kinds
// an incident counts. An event's sentence and its figures are
// supervise's (Event.Sentence, supervise.Figures), as the summary line,
// the report and systemd say them.

func kindOf(s string) supervise.Kind { return supervise.Kind(s) }

func severity(k supervise.Kind) string {
	switch k {
	case supervise.OOMKill, supervise.HeapOOM, supervise.GaveUp, supervise.PreflightFailed:
		return Critical
	}
	return Warning
}

func plural(k supervise.Kind, n int) string {
	words := map[supervise.Kind][2]string{
		supervise.OOMKill:       {"OOM kill", "OOM kills"},
		supervise.HeapOOM:       {"heap OOM", "heap OOMs"},
		supervise.MemoryRestart: {"memory restart", "memory restarts"},
		supervise.PressureStall: {"pressure stall", "pressure stalls"},
		supervise.Exited:        {"failed exit", "failed exits"},
		supervise.LeakSuspected: {"suspected leak", "suspected leaks"},
	}
	w, ok := words[k]
	if !ok {
		w = [2]string{string(k), string(k)}
	}
	if n == 1 {
		return w[0]
	}
	return w[1]
}

func fmtWindow(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%d min", int(d/time.Minute))
	}
	return d.String()
}
