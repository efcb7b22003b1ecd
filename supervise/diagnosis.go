package supervise

import (
	"time"

	"github.com/guardrun/guardrun/cgroup"
)

// Diagnosis is what a person would otherwise dig out by hand with dmesg,
// top and the cgroup files after an incident. Events that are incidents
// (oom_kill, threshold_crossed, pressure, a failed exit) carry one when
// Config.Sample is set.
type Diagnosis struct {
	// MemoryStat is the group's memory.stat breakdown in bytes: anon,
	// file, kernel, shmem, ... (v1 names as the kernel gives them).
	MemoryStat map[string]uint64 `json:"memory_stat,omitempty"`
	// Top are the largest processes in the group at the last sample
	// before the event.
	Top []cgroup.Proc `json:"top,omitempty"`
	// Growth is the group's usage over the minutes before the event.
	Growth []Sample `json:"growth,omitempty"`
	// OOMReport is the kernel's line about the kill, from /dev/kmsg.
	OOMReport string `json:"oom_report,omitempty"`
	// Runtime is the runtime's own report: Node.js's diagnostic report
	// after a heap OOM or before a graceful restart.
	Runtime *RuntimeReport `json:"runtime,omitempty"`
}

// RuntimeReport is what a runtime said about itself: for Node.js, the
// parts of its diagnostic report (--report-on-fatalerror,
// --report-on-signal) a person reads first.
type RuntimeReport struct {
	Runtime string `json:"runtime"` // node, jvm
	Pid     int    `json:"pid"`
	// Event is the report's trigger in the runtime's words: "Allocation
	// failed - JavaScript heap out of memory", or the signal asked for.
	Event string `json:"event"`
	// Stack is the JavaScript stack, innermost frame first.
	Stack []string `json:"stack,omitempty"`
	// HeapLimit and HeapUsed are the heap's limit and use in bytes. The
	// limit is the one guardrun's heap hint set (--max-old-space-size)
	// when it set one, else the runtime's own figure (V8's
	// heap_size_limit, which adds the young generation).
	HeapLimit  uint64      `json:"heap_limit,omitempty"`
	HeapUsed   uint64      `json:"heap_used,omitempty"`
	HeapSpaces []HeapSpace `json:"heap_spaces,omitempty"`
	// File is where the whole report was kept; "" when it was removed.
	File string `json:"file,omitempty"`
}

// HeapName is what the runtime calls its heap, the words of its own
// error ("JavaScript heap out of memory", "Java heap space"): the one
// place a heap is named, for the summary line, notifications and reports.
func (r *RuntimeReport) HeapName() string {
	switch r.Runtime {
	case "node":
		return "JavaScript heap"
	case "jvm", "java":
		return "Java heap"
	}
	return "heap"
}

// HeapSpace is one of V8's heap spaces (new_space, old_space, ...).
type HeapSpace struct {
	Name string `json:"name"`
	Size uint64 `json:"size"`
	Used uint64 `json:"used"`
}

// Sample is the group's usage at one time.
type Sample struct {
	Time       time.Time `json:"time"`
	Usage      uint64    `json:"usage"`
	WorkingSet uint64    `json:"working_set"`
}
