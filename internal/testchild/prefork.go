package testchild

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// prefork is a pre-fork master (gunicorn, PM2 cluster): it starts a
// worker that leaks MIB every 10 ms (this binary in leak mode), and when
// the worker dies starts another, until n workers have died; then it
// exits 0. It writes FILE (atomically) after each death: "deaths N pid P
// signal S" for the worker that just died, so a test can wait on the
// state. The master itself holds almost nothing, so the kernel's OOM
// killer picks the worker.
func prefork(n, mib, file string) int {
	count, err := strconv.Atoi(n)
	if err != nil || count <= 0 {
		fmt.Fprintf(os.Stderr, "testchild: prefork N MIB FILE: N %q\n", n)
		return 2
	}
	for deaths := 1; deaths <= count; deaths++ {
		argv := Command("leak", mib)
		w := exec.Command(argv[0], argv[1:]...)
		w.Env = Environ()
		w.Stderr = os.Stderr
		if err := w.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "testchild: prefork:", err)
			return 1
		}
		pid := w.Process.Pid
		w.Wait()
		sig := ""
		if ws, ok := w.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			sig = ws.Signal().String()
		}
		writeAtomic(file, fmt.Sprintf("deaths %d pid %d signal %s", deaths, pid, sig))
	}
	return 0
}
