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
}

// Sample is the group's usage at one time.
type Sample struct {
	Time  time.Time `json:"time"`
	Usage uint64    `json:"usage"`
}
