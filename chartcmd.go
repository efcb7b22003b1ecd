package main

// --chart is drawn by guardrun-chart, a program of its own, so that
// gonum/plot's package initialisation is paid by the runs that draw a
// chart and not by every run (observe/chart says what it costs).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/guardrun/guardrun/observe"
	"github.com/guardrun/guardrun/supervise"
)

const chartHelper = "guardrun-chart"

// chartTimeout bounds the helper: a report's samples and events are
// capped, and the PNG of a 75 s leak run's (testdata/report/leak.json)
// draws in 0.1 s here, so 30 s is only ever reached by a helper that
// hangs, which must not keep guardrun from exiting with the child's
// status.
const chartTimeout = 30 * time.Second

// findChartHelper is guardrun-chart's path: beside guardrun's own
// executable first, so a guardrun runs the helper built with it, then
// on $PATH.
func findChartHelper() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), chartHelper)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return exec.LookPath(chartHelper)
}

// drawChart has guardrun-chart draw the report into path, the report's
// JSON on its stdin. The helper's stderr is passed through; its error
// line is also the returned error's text, for the one warning about the
// chart in guardrun's log.
func drawChart(path string, rep *observe.Report) error {
	// Looked up again, not kept from the check at start: a long run may
	// outlive the helper it started with (an upgrade replaced it).
	helper, err := findChartHelper()
	if err != nil {
		return fmt.Errorf("%s is not installed: %w", chartHelper, err)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), chartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, helper, "-", path)
	var said bytes.Buffer
	cmd.Stdin = bytes.NewReader(b)
	cmd.Stderr = io.MultiWriter(os.Stderr, &limited{&said, 4 << 10})
	// A grandchild left holding the stderr pipe must not hold guardrun.
	cmd.WaitDelay = time.Second
	// A helper as the hooks are: as an init guardrun reaps every child,
	// and the chart must get guardrun's own oom_score_adj back.
	wait, err := supervise.StartHelper(cmd)
	if err == nil {
		st, werr := wait()
		if err = werr; err == nil {
			err = supervise.StatusError(st)
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s: killed after %s", helper, chartTimeout)
	}
	if line := errorLine(said.String()); line != "" {
		return fmt.Errorf("%s: %s", chartHelper, line)
	}
	return fmt.Errorf("%s: %w", helper, err)
}

// errorLine is the text of the helper's `guardrun-chart: error:` line.
func errorLine(stderr string) string {
	for _, l := range strings.Split(stderr, "\n") {
		if s, ok := strings.CutPrefix(l, chartHelper+": error: "); ok {
			return s
		}
	}
	return ""
}

// limited keeps the first n bytes written to it and drops the rest, so a
// helper that floods stderr costs guardrun no more than n.
type limited struct {
	b *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
