package observe

import (
	"bytes"
	"sort"
	"strconv"
	"strings"
)

// The Prometheus text exposition format, version 0.0.4, written by hand:
// https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
//
// guardrun exports a fixed handful of gauges and counters, one sample
// each, read when asked. client_golang did this before, and its package
// init cost every start of guardrun, metrics flags or not, about 1 ms
// (GODEBUG=inittrace=1: its default registry's Go and process collectors,
// procfs, runtime/metrics) for a default registry guardrun never used.
// The body is byte for byte what client_golang's text encoder wrote for
// the same families (expfmt_test.go keeps its output).

// textContentType is what a 0.0.4 text scrape is served as.
const textContentType = "text/plain; version=0.0.4; charset=utf-8"

type metricType string

const (
	gauge   metricType = "gauge"
	counter metricType = "counter"
)

// family is one metric family: a # HELP, a # TYPE and its samples.
type family struct {
	name    string
	help    string
	typ     metricType
	samples []sample
}

type sample struct {
	labels []labelPair
	value  float64
}

type labelPair struct{ name, value string }

// writeText writes fams in the text format, sorted by name as
// client_golang's Gather did. A family without samples is left out
// whole, HELP and TYPE too: "absent" is how an unset figure is exported.
func writeText(buf *bytes.Buffer, fams []family) {
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })
	for _, f := range fams {
		if len(f.samples) == 0 {
			continue
		}
		buf.WriteString("# HELP ")
		buf.WriteString(f.name)
		buf.WriteByte(' ')
		helpEscaper.WriteString(buf, f.help)
		buf.WriteString("\n# TYPE ")
		buf.WriteString(f.name)
		buf.WriteByte(' ')
		buf.WriteString(string(f.typ))
		buf.WriteByte('\n')
		for _, s := range f.samples {
			writeSample(buf, f.name, s)
		}
	}
}

func writeSample(buf *bytes.Buffer, name string, s sample) {
	buf.WriteString(name)
	if len(s.labels) > 0 {
		// Sorted by label name, as client_golang wrote them, so that the
		// textfile and /metrics read the same as before.
		labels := append([]labelPair(nil), s.labels...)
		sort.Slice(labels, func(i, j int) bool { return labels[i].name < labels[j].name })
		buf.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(l.name)
			buf.WriteString(`="`)
			labelEscaper.WriteString(buf, l.value)
			buf.WriteByte('"')
		}
		buf.WriteByte('}')
	}
	buf.WriteByte(' ')
	buf.WriteString(formatValue(s.value))
	buf.WriteByte('\n')
}

// The format escapes backslash and newline in HELP, and the double quote
// as well in a label value, where it would end the value.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// formatValue writes v as Go's shortest 'g' form, which is what the format
// expects (it is parsed with strconv.ParseFloat) and what client_golang
// wrote: 1.2582912e+07, 1024.5, 0, NaN, +Inf. -0 is written 0.
func formatValue(v float64) string {
	if v == 0 {
		return "0"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
