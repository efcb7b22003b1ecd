// Command servefd is internal/testchild's serve-fd as a program of its
// own, for the systemd VM, which has no test binary: a service under
// systemd's socket-activation protocol that checks LISTEN_PID, LISTEN_FDS
// and LISTEN_FDNAMES, serves HTTP on fd 3 and exits after N requests.
//
//	servefd FILE NAMES N
package main

import (
	"os"

	"github.com/guardrun/guardrun/internal/testchild"
)

func main() { os.Exit(testchild.Main("serve-fd", os.Args[1:])) }
