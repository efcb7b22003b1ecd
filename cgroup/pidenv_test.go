package cgroup

import (
	"errors"
	"io/fs"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// WithPidEnv: the command sees its own pid in the variable, started plainly
// and through the join start (where the one shim does both: the start with
// no groups to move into needs neither root nor a cgroup); an exec that
// fails is the command's own error, with the command's path, as os/exec
// reports it.
func TestWithPidEnv(t *testing.T) {
	starts := map[string]func(*exec.Cmd) error{
		"plain":  (*exec.Cmd).Start,
		"joined": func(c *exec.Cmd) error { return startJoined(c) },
	}
	for name, start := range starts {
		t.Run(name, func(t *testing.T) {
			c := exec.Command("/bin/sh", "-c", `echo "$$ $LISTEN_PID $GUARDRUN_PID_ENV$GUARDRUN_CGROUP_JOIN"`)
			var out strings.Builder
			c.Stdout = &out
			started, err := WithPidEnv(c, "LISTEN_PID")
			if err != nil {
				t.Fatal(err)
			}
			if err := started(start(c)); err != nil {
				t.Fatal(err)
			}
			if err := c.Wait(); err != nil {
				t.Fatal(err)
			}
			f := strings.Fields(out.String())
			if len(f) != 2 || f[0] != f[1] {
				t.Errorf("the command said %q: want its pid twice, and no marker left", out.String())
			}
			if c.Path != "/bin/sh" {
				t.Errorf("cmd.Path is %q after the start, want the command's", c.Path)
			}

			c = exec.Command("/nonexistent/program")
			started, err = WithPidEnv(c, "LISTEN_PID")
			if err != nil {
				t.Fatal(err)
			}
			err = started(start(c))
			var pe *fs.PathError
			if !errors.As(err, &pe) || pe.Path != "/nonexistent/program" || !errors.Is(err, syscall.ENOENT) {
				t.Errorf("exec of a missing program: %v, want fork/exec /nonexistent/program: ENOENT", err)
			}
		})
	}
}
