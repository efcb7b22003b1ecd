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
// time; an asked stop and an exit whose death has its own event are
// never sent.
//
// Which events are incidents is said here again, apart from notified, so
// that the counts check the rule rather than repeat it.
func FuzzDedupInvariants(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 200, 0, 0, 9})
	f.Add([]byte{1, 1, 1, 1, 1, 255, 1, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const window = 10 * time.Minute
		d := &Dedup{Window: window, Host: "h"}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		kinds := []supervise.Kind{supervise.OOMKill, supervise.ThresholdCrossed, supervise.GaveUp, supervise.Started, supervise.Exited,
			supervise.HeapOOM, supervise.MemoryRestart}
		causes := []string{supervise.CauseExited, supervise.CauseSignaled, supervise.CauseOOMKill, supervise.CauseHeapOOM}
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
			e := supervise.Event{Kind: kinds[int(op/2)%len(kinds)], Run: run, ExitCode: int(op % 3),
				Cause: causes[int(op/3)%len(causes)], Asked: op%5 == 0}
			switch {
			case e.Kind == supervise.GaveUp:
				gaveUp++
			case isIncident(e):
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

func isIncident(e supervise.Event) bool {
	switch e.Kind {
	case supervise.OOMKill, supervise.HeapOOM, supervise.MemoryRestart:
		return true
	case supervise.Exited:
		died := e.Cause == supervise.CauseOOMKill || e.Cause == supervise.CauseHeapOOM
		return e.ExitCode != 0 && !e.Asked && !died
	}
	return false // threshold_crossed, started; gave_up is counted apart
}
