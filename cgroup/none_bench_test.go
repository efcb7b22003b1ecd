package cgroup

import (
	"path/filepath"
	"testing"
)

// BenchmarkNoneSample is one sample of the no-cgroup sampler over a real
// child and grandchild, with guardrun a subreaper (init=on, as the CLI
// runs it: guardrun's own children are read too) and not. Its cost must
// not grow with the processes on the host: scripts/bench.d/none-scaling
// runs it beside 100 and 2,000 idle ones.
func BenchmarkNoneSample(b *testing.B) {
	g, err := Open(Options{Name: "grbench-none", Backend: "none"})
	if err != nil {
		b.Fatal(err)
	}
	pidfile := filepath.Join(b.TempDir(), "pids")
	c := child("tree", "1", pidfile)
	if err := g.Start(c); err != nil {
		g.Remove()
		b.Fatal(err)
	}
	defer func() {
		g.Remove() // kills the tree
		c.Wait()
	}()
	grand := pidsOf(b, pidfile)[0]
	defer killPids(grand)
	n := g.(*noneGroup)
	// The benchmark samples, not the ticker.
	close(n.stop)
	<-n.done
	n.stop = nil
	for _, adopt := range []bool{true, false} {
		name := "init=off"
		if adopt {
			name = "init=on"
		}
		b.Run(name, func(b *testing.B) {
			n.mu.Lock()
			n.subreaper = adopt
			n.mu.Unlock()
			b.ReportAllocs()
			for b.Loop() {
				n.sample()
			}
			if pids, _ := g.Procs(); len(pids) != 2 {
				b.Fatalf("sampled %v, want the child %d and its grandchild %d", pids, c.Process.Pid, grand)
			}
		})
	}
}
