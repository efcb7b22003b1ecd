// Command guardrun-chart draws a run's report, the JSON guardrun --report
// writes, as memory over time: guardrun-chart REPORT.json OUT.svg|OUT.png,
// REPORT - for stdin. guardrun --chart runs it at the end of a run; it is
// a program of its own so that gonum/plot, and the cost of its package
// initialisation, stay out of guardrun's binary (see observe/chart).
package main

import (
	"os"

	"github.com/guardrun/guardrun/observe/chart"
)

func main() {
	os.Exit(chart.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
