package chart

// guardrun-chart's command line. It is here rather than in
// cmd/guardrun-chart so that guardrun's testscripts can run it as a
// command of the test binary, as they run guardrun.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/guardrun/guardrun/observe"
	"github.com/guardrun/guardrun/supervise"
)

const usage = "usage: guardrun-chart REPORT.json OUT.svg|OUT.png (REPORT - reads stdin)"

// cliError is what guardrun-chart prints when it fails: one error line,
// then one hint line per fix, as guardrun's own.
type cliError struct {
	msg   string
	hints []string
}

func (e *cliError) Error() string { return e.msg }

func failure(msg string, hints ...string) error { return &cliError{msg, hints} }

// Main runs guardrun-chart with args (args[0] is the program) and returns
// its exit status: 0, or 125 as guardrun's for bad input, after one
// `guardrun-chart: error:` line and its hints on stderr.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 2 && (args[1] == "-h" || args[1] == "--help") {
		fmt.Fprintln(stdout, usage)
		fmt.Fprintln(stdout, "draws a run's report, as guardrun --report FILE writes it, as memory over time")
		return 0
	}
	err := run(args, stdin)
	if err == nil {
		return 0
	}
	ce, ok := err.(*cliError)
	if !ok {
		ce = &cliError{msg: err.Error()}
	}
	fmt.Fprintf(stderr, "guardrun-chart: error: %s\n", ce.msg)
	for _, h := range ce.hints {
		fmt.Fprintf(stderr, "guardrun-chart: hint: %s\n", h)
	}
	return supervise.ExitInternal
}

func run(args []string, stdin io.Reader) (err error) {
	if len(args) != 3 {
		return failure(fmt.Sprintf("want a report and a chart file, got %d arguments", len(args)-1), usage)
	}
	in, out := args[1], args[2]
	format, err := observe.ChartFormat(out)
	if err != nil {
		return failure(err.Error(), "name the file .svg or .png")
	}
	r, err := readReport(in, stdin)
	if err != nil {
		return err
	}
	// A report that parses but draws nothing sensible must still end in
	// an error line, never in a stack trace.
	defer func() {
		if p := recover(); p != nil {
			err = failure(fmt.Sprintf("%s: cannot draw this report: %v", in, p), "check that it is a report guardrun --report wrote, unedited")
		}
	}()
	b, err := Draw(r, format)
	if err != nil {
		return failure(err.Error())
	}
	if err := observe.WriteFile(out, b, 0o644); err != nil {
		return failure(err.Error(), "write the chart to a directory that exists and has room")
	}
	return nil
}

// readReport reads the report at path, or stdin for "-", and checks that
// it is one guardrun wrote.
func readReport(path string, stdin io.Reader) (*observe.Report, error) {
	const hint = "give the JSON file that guardrun --report FILE wrote, or - to read it from stdin"
	var b []byte
	var err error
	if path == "-" {
		path = "stdin"
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, failure("read the report: "+err.Error(), hint)
	}
	var r observe.Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, failure(fmt.Sprintf("%s: not a guardrun report: %v", path, err), hint)
	}
	if r.Schema != observe.ReportSchema {
		return nil, failure(fmt.Sprintf("%s: not a guardrun report: schema %q, want %q", path, r.Schema, observe.ReportSchema), hint)
	}
	return &r, nil
}
