package supervise

import (
	"context"
	"fmt"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/shirou/gopsutil/v4/mem"
)

// MemAvailable reads the kernel's estimate of memory available for a new
// workload without swapping (MemAvailable in /proc/meminfo).
func MemAvailable() (uint64, error) {
	v, err := mem.VirtualMemory()
	if err != nil {
		return 0, err
	}
	return v.Available, nil
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
// need. With wait > 0 it re-checks every interval until then. A child
// started without room would only be killed at once, and might take a
// neighbour with it.
type Preflight struct {
	Need     uint64
	Wait     time.Duration
	Interval time.Duration                              // between checks; default 500ms
	Avail    func() (uint64, error)                     // default MemAvailable
	Sleep    func(context.Context, time.Duration) error // default: a timer
	Waiting  func(avail uint64)                         // called once when a wait begins
}

// Check returns nil when there is room, ctx's error when ctx ends first,
// and a *PreflightError when the wait ran out.
func (p Preflight) Check(ctx context.Context) error {
	if p.Need == 0 {
		return nil
	}
	avail, sleep, interval := p.Avail, p.Sleep, p.Interval
	if avail == nil {
		avail = MemAvailable
	}
	if sleep == nil {
		sleep = sleepCtx
	}
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	var waited time.Duration
	for {
		a, err := avail()
		if err != nil {
			return fmt.Errorf("preflight: read MemAvailable: %w", err)
		}
		if a >= p.Need {
			return nil
		}
		if waited >= p.Wait {
			return &PreflightError{Need: p.Need, Available: a, Waited: waited}
		}
		if waited == 0 && p.Waiting != nil {
			p.Waiting(a)
		}
		step := min(interval, p.Wait-waited)
		if err := sleep(ctx, step); err != nil {
			return err
		}
		waited += step
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
