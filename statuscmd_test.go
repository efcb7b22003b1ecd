package main

import (
	"testing"

	"github.com/guardrun/guardrun/observe"
)

func TestMemoryCell(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name string
		st   observe.State
		want string
	}{
		{"working set and usage", observe.State{Current: 500 * mib, WorkingSet: 180 * mib, Cache: 320 * mib, Ceiling: 512 * mib},
			"working set 180 MiB / 512 MiB [███░░░░░░░] 35%, usage 500 MiB"},
		{"no ceiling", observe.State{Current: 500 * mib, WorkingSet: 180 * mib, Cache: 320 * mib},
			"working set 180 MiB, usage 500 MiB"},
		{"over the ceiling", observe.State{Current: 600 * mib, WorkingSet: 600 * mib, Cache: 1 * mib, Ceiling: 512 * mib},
			"working set 600 MiB / 512 MiB [██████████] 117%, usage 600 MiB"},
		{"no cgroup: RSS is both", observe.State{Current: 212 * mib, WorkingSet: 212 * mib, Ceiling: 512 * mib},
			"212 MiB / 512 MiB [████░░░░░░] 41%"},
		{"an older state file", observe.State{Current: 212 * mib, Ceiling: 512 * mib},
			"212 MiB / 512 MiB [████░░░░░░] 41%"},
		{"between children", observe.State{Ceiling: 256 * mib}, "0 B / 256 MiB [░░░░░░░░░░] 0%"},
	} {
		if got := memoryCell(tc.st); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}
