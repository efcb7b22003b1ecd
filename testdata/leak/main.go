// Command leak is the demo's misbehaving service: it holds on to 8 MiB more
// (or the MiB given as its argument) every 50 ms, touching each page so the
// kernel charges it, until something stops it. scripts/demo runs it under a
// 64 MiB ceiling.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	step := 8
	if len(os.Args) > 1 {
		n, err := strconv.Atoi(os.Args[1])
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "leak: %q is not a number of MiB\n", os.Args[1])
			os.Exit(2)
		}
		step = n
	}
	var held [][]byte
	for i := 1; ; i++ {
		b := make([]byte, step<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		held = append(held, b)
		fmt.Fprintf(os.Stdout, "leak: holding %d MiB\n", i*step)
		time.Sleep(50 * time.Millisecond)
	}
}
