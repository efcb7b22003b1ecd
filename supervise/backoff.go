package supervise

import (
	"math/rand/v2"
	"time"
)

// Backoff is the delay between restarts: exponential up to the cap,
// jittered down to anywhere in the delay's lower half, and reset to the
// minimum by a child that stayed up long enough. The defaults and why are
// in docs/BEHAVIOUR.md, "Restarts".
type Backoff struct {
	Min, Max time.Duration
	Factor   float64
	// Reset: a child that ran at least this long starts the schedule over.
	Reset time.Duration
	// Jitter draws a number in [0, 1); nil is math/rand. Tests inject it.
	Jitter func() float64

	next time.Duration // the next delay before jitter; 0 means Min
}

// Next returns the delay before the next start, given how long the child
// that just ended ran, and advances the schedule.
func (b *Backoff) Next(uptime time.Duration) time.Duration {
	if b.next == 0 || (b.Reset > 0 && uptime >= b.Reset) {
		b.next = b.Min
	}
	d := b.next
	f := b.Factor
	if f < 1 {
		f = 1
	}
	b.next = min(time.Duration(float64(b.next)*f), b.Max)
	if b.next <= 0 { // Min 0: stay at 0, do not divide by it
		b.next = 0
	}
	// Jitter spreads the delay over [d/2, d], so restarts of many
	// guarded services do not fall into step, yet never wait longer
	// than the schedule says.
	j := b.Jitter
	if j == nil {
		j = rand.Float64
	}
	return d/2 + time.Duration(j()*float64(d/2))
}
