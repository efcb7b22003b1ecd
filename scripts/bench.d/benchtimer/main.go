// benchtimer times whole runs of commands for scripts/vmbench (the VM has
// no hyperfine):
//
//	benchtimer N WARMUP CMD... [:: CMD...]...
//
// runs the commands in turn, round after round (WARMUP rounds first, not
// counted), each with syscall.ForkExec (clone(CLONE_VFORK|CLONE_VM), then
// exec) and wait4, stdio on /dev/null (as hyperfine's default), and prints
// "K ROUND NS STATUS" for each counted run once all are done: K is the
// command's index, NS the wall time (monotonic) from before the fork to
// wait4's return, STATUS the exit code (128+signal if killed). Go rather
// than C as go is needed anyway and builds it static without libc.a; GC is
// off while it measures.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"
)

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchtimer: "+f+"\n", a...)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: benchtimer N WARMUP CMD... [:: CMD...]...")
	}
	n, err1 := strconv.Atoi(os.Args[1])
	w, err2 := strconv.Atoi(os.Args[2])
	if err1 != nil || err2 != nil || n < 1 || w < 0 {
		fail("N and WARMUP must be numbers (N > 0)")
	}
	var cmds [][]string
	cur := []string{}
	for _, a := range os.Args[3:] {
		if a == "::" {
			cmds, cur = append(cmds, cur), []string{}
			continue
		}
		cur = append(cur, a)
	}
	cmds = append(cmds, cur)
	paths := make([]string, len(cmds))
	for k, c := range cmds {
		if len(c) == 0 {
			fail("command %d is empty", k)
		}
		p, err := exec.LookPath(c[0])
		if err != nil {
			fail("%v", err)
		}
		paths[k] = p
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fail("%v", err)
	}
	fd := null.Fd()
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{fd, fd, fd}}
	type run struct {
		k, r, st int
		ns       int64
	}
	runs := make([]run, 0, n*len(cmds))
	debug.SetGCPercent(-1)
	for r := 0; r < w+n; r++ {
		for k := range cmds {
			t0 := time.Now()
			pid, err := syscall.ForkExec(paths[k], cmds[k], attr)
			if err != nil {
				fail("start %s: %v", paths[k], err)
			}
			var ws syscall.WaitStatus
			for {
				_, err = syscall.Wait4(pid, &ws, 0, nil)
				if err != syscall.EINTR {
					break
				}
			}
			d := time.Since(t0)
			if err != nil {
				fail("wait4: %v", err)
			}
			st := ws.ExitStatus()
			if ws.Signaled() {
				st = 128 + int(ws.Signal())
			}
			if r >= w {
				runs = append(runs, run{k, r - w, st, d.Nanoseconds()})
			}
		}
	}
	out := bufio.NewWriter(os.Stdout)
	for _, x := range runs {
		fmt.Fprintf(out, "%d %d %d %d\n", x.k, x.r, x.ns, x.st)
	}
	out.Flush()
}
