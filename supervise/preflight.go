package supervise

import (
	"fmt"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/proc"
)

// MemAvailable reads the kernel's estimate of memory available for a new
// workload without swapping (MemAvailable in /proc/meminfo).
func MemAvailable() (uint64, error) {
	m, err := proc.ReadMemInfo()
	return m.Available, err
}

// PreflightError says the host lacked the memory a start asked for.
type PreflightError struct {
	Need, Available uint64
	Waited          time.Duration
}

func (e *PreflightError) Error() string {
	s := fmt.Sprintf("preflight: %s available, %s needed", cgroup.FormatSize(e.Available), cgroup.FormatSize(e.Need))
	if e.Waited > 0 {
		s += fmt.Sprintf(" (waited %s)", e.Waited.Round(time.Millisecond))
	}
	return s
}

// Preflight is the guard before a start: MemAvailable must be at least
// Need. A first start rechecks every Interval for at most Wait; a restart
// waits on the restart backoff for as long as it takes (supervisor's
// preflight, the one loop that waits). A child started without room would
// only be killed at once, and might take a neighbour with it.
type Preflight struct {
	Need     uint64
	Wait     time.Duration
	Interval time.Duration          // between checks of a first start; default 500ms
	Avail    func() (uint64, error) // default MemAvailable
}
