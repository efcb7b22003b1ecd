// Command leak is the demo's misbehaving service: it holds on to 8 MiB more
// every 50 ms, touching each page so the kernel charges it, until something
// stops it. scripts/demo runs it under a 64 MiB ceiling.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	var held [][]byte
	for i := 1; ; i++ {
		b := make([]byte, 8<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		held = append(held, b)
		fmt.Fprintf(os.Stdout, "leak: holding %d MiB\n", i*8)
		time.Sleep(50 * time.Millisecond)
	}
}
