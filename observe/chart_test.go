package observe

import "testing"

func TestChartFormat(t *testing.T) {
	for _, tc := range []struct {
		path, want, err string
	}{
		{"run.svg", "svg", ""},
		{"/var/tmp/run.png", "png", ""},
		{"out/RUN.PNG", "png", ""},
		{"run.v2.svg", "svg", ""},
		{"run.jpg", "", "run.jpg: .jpg is not a chart format; accepted: .svg, .png"},
		{"run.svgz", "", "run.svgz: .svgz is not a chart format; accepted: .svg, .png"},
		{"chart", "", "chart: no extension to tell the format; accepted: .svg, .png"},
		{"out.d/chart", "", "out.d/chart: no extension to tell the format; accepted: .svg, .png"},
	} {
		got, err := ChartFormat(tc.path)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("ChartFormat(%q) = %q, %v; want %q, %q", tc.path, got, err, tc.want, tc.err)
		}
	}
}
