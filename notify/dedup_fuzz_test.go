package notify

import (
	"testing"
	"time"

	"github.com/guardrun/guardrun/supervise"
)

// FuzzDedupInvariants drives the dedup engine with any sequence of events
// and clock steps and checks the contract: the firing counts of a key sum
// to its events (nothing is lost, Flush included); no span of one window
// sees more than two firing notifications of a key; gave_up is sent every
// time.
func FuzzDedupInvariants(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 200, 0, 0, 9})
	f.Add([]byte{1, 1, 1, 1, 1, 255, 1, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const window = 10 * time.Minute
		d := &Dedup{Window: window, Host: "h"}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		kinds := []supervise.Kind{supervise.OOMKill, supervise.ThresholdCrossed, supervise.GaveUp, supervise.Started, supervise.Exited}
		events := map[string]int{} // firing-kind events per key
		counts := map[string]int{} // firing counts per key
		gaveUp, gaveUpSent := 0, 0
		sent := map[string][]time.Time{} // when each key's firing notifications went out
		take := func(ns []Notification) {
			for _, n := range ns {
				if n.Status != Firing {
					continue
				}
				k := n.Run + "/" + n.Kind
				if n.Kind == string(supervise.GaveUp) {
					gaveUpSent++
					continue
				}
				counts[k] += n.Count
				sent[k] = append(sent[k], now)
			}
		}
		for _, op := range ops {
			if op >= 200 { // a step of the clock
				now = now.Add(time.Duration(op-199) * time.Minute)
				take(d.Tick(now))
				continue
			}
			run := []string{"a", "b"}[op%2]
			e := supervise.Event{Kind: kinds[int(op/2)%len(kinds)], Run: run, ExitCode: int(op % 3)}
			switch {
			case e.Kind == supervise.GaveUp:
				gaveUp++
			case notified(e):
				events[run+"/"+string(e.Kind)]++
			}
			take(d.Observe(e, now))
		}
		for k, ts := range sent {
			for i := range ts {
				n := 0
				for _, u := range ts[i:] {
					if u.Sub(ts[i]) < window {
						n++
					}
				}
				if n > 2 {
					t.Fatalf("%s: %d firing notifications within one window from %v", k, n, ts[i])
				}
			}
		}
		take(d.Flush()) // at exit: what is folded goes out, whatever the window
		for k, n := range events {
			if counts[k] != n {
				t.Fatalf("%s: %d events, firing counts sum to %d", k, n, counts[k])
			}
		}
		if gaveUp != gaveUpSent {
			t.Fatalf("%d gave_up events, %d sent", gaveUp, gaveUpSent)
		}
	})
}
