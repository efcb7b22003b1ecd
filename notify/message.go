package notify

import (
	"fmt"
	"strings"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
)

// This file puts events into words: the sentence of a notification, the
// figures beside it, the names of the kinds.

func kindOf(s string) supervise.Kind { return supervise.Kind(s) }

func severity(k supervise.Kind) string {
	switch k {
	case supervise.OOMKill, supervise.HeapOOM, supervise.GaveUp, supervise.PreflightFailed:
		return Critical
	}
	return Warning
}

// message is the one human sentence of a first notification.
func message(e supervise.Event) string {
	size := cgroup.FormatSize
	switch e.Kind {
	case supervise.OOMKill:
		return oomMessage(e)
	case supervise.HeapOOM:
		return heapMessage(e)
	case supervise.MemoryRestart:
		why := e.Detail
		if why == "" {
			why = restartWhy(e.Reason)
		}
		return fmt.Sprintf("guardrun restarted %s before its ceiling: %s", e.Run, why)
	case supervise.GaveUp:
		return fmt.Sprintf("guardrun gave up on %s, a crash loop: %s", e.Run, e.Reason)
	case supervise.PreflightFailed:
		return fmt.Sprintf("%s was not started: %s available, %s needed", e.Run, size(e.Available), size(e.Need))
	case supervise.PressureStall:
		return fmt.Sprintf("%s is stalled on memory (PSI trigger %q): %s", e.Run, e.Reason, strings.Join(figures(e.WorkingSet, e.Usage, e.Cache, e.Limit, 0), ", "))
	case supervise.LeakSuspected:
		// The forecast reads the working set (page cache the kernel can
		// drop is not a leak); usage stands in where there is none.
		now := e.WorkingSet
		if now == 0 {
			now = e.Usage
		}
		return fmt.Sprintf("%s looks like it leaks memory: %s (now %s)", e.Run, e.Reason, size(now))
	case supervise.Exited:
		if e.Signal != "" {
			return fmt.Sprintf("%s was killed by %s", e.Run, e.Signal)
		}
		return fmt.Sprintf("%s exited %d", e.Run, e.ExitCode)
	}
	return fmt.Sprintf("%s: %s", e.Run, e.Kind)
}

// oomMessage says who the kernel killed. Since the kernel tells each kill
// while the child lives, the victim may be a worker of a service that
// goes on (Event.Pid is the main child): that is news of its own, and
// "was killed" would say the service died when it did not.
func oomMessage(e supervise.Event) string {
	killer := e.Reason
	if killer == "" {
		killer = "the kernel OOM killer"
	}
	if v := e.Victim; v != nil && e.Pid != 0 && v.Pid != e.Pid {
		who := fmt.Sprintf("worker pid %d", v.Pid)
		if v.Command != "" {
			who += " (" + v.Command + ")"
		}
		at := ""
		if e.Limit > 0 {
			at = " at the " + cgroup.FormatSize(e.Limit) + " ceiling"
		}
		return fmt.Sprintf("%s: %s killed %s%s; the service runs on", e.Run, killer, who, at)
	}
	return fmt.Sprintf("%s was killed by %s at its %s ceiling (peak %s)", e.Run, killer, cgroup.FormatSize(e.Limit), cgroup.FormatSize(e.Peak))
}

// heapMessage names the runtime, its heap limit and where it was when the
// heap ran out: "api ran out of its 192 MiB JavaScript heap (node, pid
// 4242) at processRequest (/srv/app.js:12:5)". What the runtime did not
// report is left out.
func heapMessage(e supervise.Event) string {
	var rt supervise.RuntimeReport
	if e.Diagnosis != nil && e.Diagnosis.Runtime != nil {
		rt = *e.Diagnosis.Runtime
	}
	heap := rt.HeapName()
	if rt.HeapLimit > 0 {
		heap = cgroup.FormatSize(rt.HeapLimit) + " " + heap
	}
	if rt.Runtime == "" {
		heap = "runtime's " + heap
	}
	pid := rt.Pid
	if pid == 0 {
		pid = e.Pid
	}
	var who []string
	if rt.Runtime != "" {
		who = append(who, rt.Runtime)
	}
	if pid != 0 {
		who = append(who, fmt.Sprintf("pid %d", pid))
	}
	s := fmt.Sprintf("%s ran out of its %s", e.Run, heap)
	if len(who) > 0 {
		s += " (" + strings.Join(who, ", ") + ")"
	}
	if f := topFrame(rt.Stack); f != "" {
		s += " at " + f
	}
	if rt.Pid != 0 && e.Pid != 0 && rt.Pid != e.Pid {
		s += "; the service runs on" // a worker died, as oomMessage says of one
	}
	return s
}

// topFrame is the innermost frame of a stack, without V8's "at ".
func topFrame(stack []string) string {
	for _, f := range stack {
		if f = strings.TrimPrefix(strings.TrimSpace(f), "at "); f != "" {
			return f
		}
	}
	return ""
}

// restartWhy stands in for a memory_restart's Detail, should it be empty.
func restartWhy(reason string) string {
	switch reason {
	case "restart_at":
		return "its working set stayed over --restart-at"
	case "pressure":
		return "the --pressure trigger fired"
	}
	return reason
}

// figures are the memory figures a person asks for next, each when known:
// "working set 180 MiB", "usage 500 MiB", "page cache 320 MiB",
// "ceiling 512 MiB", "peak 512 MiB". The working set is what the kernel
// cannot reclaim before it kills; usage counts page cache it can. Without
// a cgroup the two are one figure (RSS), said once.
func figures(ws, usage, cache, ceiling, peak uint64) []string {
	size := cgroup.FormatSize
	var f []string
	if ws > 0 && (ws != usage || cache > 0) {
		f = append(f, "working set "+size(ws))
	}
	if usage > 0 {
		f = append(f, "usage "+size(usage))
	}
	if cache > 0 {
		f = append(f, "page cache "+size(cache))
	}
	if ceiling > 0 {
		f = append(f, "ceiling "+size(ceiling))
	}
	if peak > 0 {
		f = append(f, "peak "+size(peak))
	}
	return f
}

// heapFigures is a runtime's heap in a phrase: "heap 190 MiB used of
// 192 MiB (node, pid 4242)".
func heapFigures(rt *supervise.RuntimeReport) string {
	size := cgroup.FormatSize
	s := rt.HeapName()
	switch {
	case rt.HeapUsed > 0 && rt.HeapLimit > 0:
		s += fmt.Sprintf(" %s used of %s", size(rt.HeapUsed), size(rt.HeapLimit))
	case rt.HeapLimit > 0:
		s += " limit " + size(rt.HeapLimit)
	case rt.HeapUsed > 0:
		s += " " + size(rt.HeapUsed) + " used"
	}
	if rt.Runtime != "" && rt.Pid != 0 {
		s += fmt.Sprintf(" (%s, pid %d)", rt.Runtime, rt.Pid)
	}
	return s
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
