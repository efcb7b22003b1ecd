//go:build race

package cgroup

// raceEnabled: the test binary is built with -race.
const raceEnabled = true
