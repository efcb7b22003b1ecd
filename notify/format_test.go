package notify

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A target names its own format with FORMAT+URL; a bare URL takes the
// default (--notify-format), or slack for Slack's host and json otherwise.
func TestParseSinkFormats(t *testing.T) {
	for _, tc := range []struct {
		target, format string
		want           string // json, slack, alertmanager, or the error
		name           string
	}{
		{"https://example.com/hook", "", "json", "https://example.com/…"},
		{"https://hooks.slack.com/services/T/B/X", "", "slack", "https://hooks.slack.com/…"},
		{"https://example.com/hook", "slack", "slack", "https://example.com/…"},
		{"json+https://hooks.slack.com/services/T/B/X", "", "json", "json+https://hooks.slack.com/…"},
		{"json+https://example.com/hook", "slack", "json", "json+https://example.com/…"},
		{"slack+http://127.0.0.1:8080/s3cret", "json", "slack", "slack+http://127.0.0.1:8080/…"},
		{"alertmanager+http://am:9093", "slack", "alertmanager", "alertmanager+http://am:9093"},
		{"xml+https://example.com/s3cret", "", `xml+https://example.com/…: unknown format "xml" (use json+, slack+, alertmanager+)`, ""},
		{"slack+ftp://example.com/x", "", "slack+ftp://example.com/…: not an http(s):// or alertmanager+http(s):// URL", ""},
		{"ftp://x", "", "ftp://x: not an http(s):// or alertmanager+http(s):// URL", ""},
	} {
		s, err := ParseSink(tc.target, tc.format, time.Minute)
		if err != nil {
			if err.Error() != tc.want || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("%s: error %q, want %q", tc.target, err, tc.want)
			}
			continue
		}
		got := "alertmanager"
		if h, ok := s.(*httpSink); ok {
			b, _ := h.body(Notification{Kind: "oom_kill"})
			got = "json"
			if strings.HasPrefix(string(b), `{"text":`) {
				got = "slack"
			}
		}
		if got != tc.want || s.Name() != tc.name {
			t.Errorf("%s (default %q): %s named %s, want %s named %s", tc.target, tc.format, got, s.Name(), tc.want, tc.name)
		}
	}
}

// Two targets with different formats each get their own body, from the
// same notification, on two real receivers; the global default applies
// to the bare one.
func TestTwoTargetsTwoFormats(t *testing.T) {
	slack, plain, bare := newReceiver(t, 200), newReceiver(t, 200), newReceiver(t, 200)
	n := New(fast(sink(t, "slack+"+slack.URL+"/s", "json"), sink(t, "json+"+plain.URL+"/j", "slack"), sink(t, bare.URL+"/b", "slack")))
	n.Observe(oom("app", 0))
	slack.wait(t, 1)
	plain.wait(t, 1)
	bare.wait(t, 1)
	n.Close(time.Second)
	var s map[string]any
	if err := json.Unmarshal(slack.bodies[0], &s); err != nil || len(s) != 1 || !strings.HasPrefix(s["text"].(string), ":rotating_light: *app*") {
		t.Fatalf("slack+ target got %s", slack.bodies[0])
	}
	if ns := plain.notifications(t); ns[0].Schema != Schema || ns[0].Kind != "oom_kill" {
		t.Fatalf("json+ target got %s", plain.bodies[0])
	}
	if !strings.HasPrefix(string(bare.bodies[0]), `{"text":":rotating_light:`) {
		t.Fatalf("a bare target under --notify-format slack got %s", bare.bodies[0])
	}
}
