package supervise

import (
	"context"
	"os/exec"
	"testing"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
)

// BenchmarkStartBare and BenchmarkStartGuarded are run side by side
// (go test -bench Start): the cost guardrun adds to starting and reaping a
// child that exits at once is the difference. Run on the host (v1) and in
// the VM (scripts/vmtest -run '^$' -args '-test.bench=Start'), v2.
func BenchmarkStartBare(b *testing.B) {
	argv := testchild.Command("exit", "0")
	for b.Loop() {
		c := exec.Command(argv[0], argv[1:]...)
		c.Env = testchild.Environ()
		if err := c.Run(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStartGuarded(b *testing.B) {
	h := cgroup.Discover()
	testchild.RequireCgroup(b, h.Version(), "")
	cfg := Config{
		Name:    "grbench",
		Command: testchild.Command("exit", "0"),
		Backend: h.Version(),
		Limits:  cgroup.Limits{Ceiling: 256 << 20},
		Env:     testchild.Environ(),
	}
	for b.Loop() {
		if r, err := Run(context.Background(), cfg); err != nil || r.ExitCode != 0 {
			b.Fatal(r, err)
		}
	}
}
