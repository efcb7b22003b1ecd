package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
	"golang.org/x/sys/unix"
)

// Sink delivers one notification. Send must honour ctx: the per-request
// timeout and the exit deadline both come through it.
type Sink interface {
	Send(ctx context.Context, n Notification) error
	// Name is how logs show the sink: never a secret (see Redact).
	Name() string
}

// A target names its own format as FORMAT+URL (slack+https://...,
// json+https://..., alertmanager+http://host:9093); a bare URL takes the
// --notify-format default. The prefix is on the target, not in a second
// flag, so that one value says where and how, as alertmanager+ always
// did, and a list of targets in GUARDRUN_NOTIFY or a config file can mix
// formats.
const formatPrefixes = "json+, slack+, alertmanager+"

func isFormat(f string) bool { return f == "json" || f == "slack" || f == "alertmanager" }

// ParseSink reads a --notify target, URL or FORMAT+URL. format is the
// default for a bare URL: "", "json" or "slack"; "" picks slack for
// Slack's incoming-webhook host and json for any other URL.
// alertmanager+http(s)://host:port posts to Alertmanager's API.
func ParseSink(target, format string, window time.Duration) (Sink, error) {
	prefix, raw, err := splitFormat(target)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: not an http(s):// or alertmanager+http(s):// URL", Redact(target))
	}
	if prefix != "" {
		format = prefix
	}
	if format == "" {
		format = "json"
		if u.Host == "hooks.slack.com" {
			format = "slack"
		}
	}
	client := &http.Client{}
	name := Redact(target)
	switch format {
	case "alertmanager":
		u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v2/alerts"
		return &alertmanagerSink{url: u.String(), name: name, client: client, window: window}, nil
	case "slack":
		return &httpSink{url: raw, name: name, client: client, body: slackBody}, nil
	case "json":
		return &httpSink{url: raw, name: name, client: client, body: jsonBody}, nil
	}
	return nil, fmt.Errorf("--notify-format %s: unknown format", format)
}

// splitFormat cuts a target's FORMAT+ prefix off. A scheme with a + in it
// that is not a format is refused by name: "xml+https://..." is a
// format that does not exist, not a URL scheme.
func splitFormat(target string) (format, raw string, err error) {
	scheme, _, ok := strings.Cut(target, "://")
	if !ok {
		return "", target, nil
	}
	f, _, ok := strings.Cut(scheme, "+")
	if !ok {
		return "", target, nil
	}
	if !isFormat(f) {
		return "", "", fmt.Errorf("%s: unknown format %q (use %s)", Redact(target), f, formatPrefixes)
	}
	return f, strings.TrimPrefix(target, f+"+"), nil
}

// Redact keeps what identifies a URL's receiver and drops what may be a
// secret: user info, path, query. Webhook URLs carry their token in the
// path (Slack's /services/T000/B000/XXXX). A FORMAT+ prefix stays.
func Redact(target string) string {
	prefix := ""
	if scheme, _, ok := strings.Cut(target, "://"); ok {
		if f, _, ok := strings.Cut(scheme, "+"); ok {
			prefix, target = f+"+", strings.TrimPrefix(target, f+"+")
		}
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return prefix + "(unparsable URL)"
	}
	s := prefix + u.Scheme + "://" + u.Host
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		s += "/…"
	}
	return s
}

// httpSink posts a JSON body; any 2xx is delivered.
type httpSink struct {
	url, name string
	client    *http.Client
	body      func(Notification) ([]byte, error)
}

func (s *httpSink) Name() string { return s.name }

// key is the receiver, not the format: a target whose format changed
// between runs still gets what it missed.
func (s *httpSink) key() string { return s.url }

func (s *httpSink) Send(ctx context.Context, n Notification) error {
	b, err := s.body(n)
	if err != nil {
		return err
	}
	return post(ctx, s.client, s.url, b)
}

func post(ctx context.Context, c *http.Client, u string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "guardrun")
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, which may hold a token
		}
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	return nil
}

func jsonBody(n Notification) ([]byte, error) { return json.Marshal(n) }

// slackFrames is how much of a runtime's stack a Slack message shows.
const slackFrames = 5

// slackBody is a Slack incoming-webhook message: the sentence first, then
// the figures a person asks for next.
func slackBody(n Notification) ([]byte, error) {
	icon := ":rotating_light:"
	switch {
	case n.Status == Resolved:
		icon = ":white_check_mark:"
	case n.Severity == Warning:
		icon = ":warning:"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s *%s* on %s: %s", icon, n.Run, n.Host, n.Message)
	if n.Status == Firing {
		fmt.Fprintf(&b, "\nrestarts %d", n.Restarts)
		for _, f := range supervise.Figures(n.WorkingSet, n.Usage, n.Cache, n.Ceiling, n.Peak) {
			b.WriteString(" · " + f)
		}
		if d := n.Diagnosis; d != nil {
			for _, p := range d.Top {
				fmt.Fprintf(&b, "\n• %d %s %s", p.Pid, p.Command, cgroup.FormatSize(p.RSS))
			}
			if d.OOMReport != "" {
				fmt.Fprintf(&b, "\n```%s```", d.OOMReport)
			}
			if rt := d.Runtime; rt != nil {
				b.WriteString("\n" + supervise.HeapFigures(rt))
				if rt.Event != "" {
					b.WriteString(": " + rt.Event)
				}
				// The innermost frames say where; the rest is in the
				// report's file and the JSON.
				if len(rt.Stack) > 0 {
					fmt.Fprintf(&b, "\n```%s```", strings.Join(rt.Stack[:min(len(rt.Stack), slackFrames)], "\n"))
				}
			}
		}
	}
	return json.Marshal(map[string]string{"text": b.String()})
}

// alertmanagerSink posts to Alertmanager's v2 API, so a fleet's incidents
// are grouped and silenced where its operators already do that. An alert
// is its labels; a resolved one is the same labels with endsAt now.
type alertmanagerSink struct {
	url, name string
	client    *http.Client
	window    time.Duration
}

func (s *alertmanagerSink) Name() string { return s.name }

func (s *alertmanagerSink) key() string { return s.url } // the API's URL, /api/v2/alerts

func (s *alertmanagerSink) Send(ctx context.Context, n Notification) error {
	// A firing alert that is not re-sent ends at endsAt. guardrun speaks
	// again by the close of the next window at the latest (a summary or
	// the resolution), so the alert is kept alive until just past it.
	ends := n.LastSeen.Add(2*s.window + time.Minute)
	if n.Status == Resolved {
		ends = n.LastSeen
	}
	alert := map[string]any{
		"labels": map[string]string{
			"alertname": "guardrun_" + n.Kind,
			"run":       n.Run,
			"host":      n.Host,
			"kind":      n.Kind,
			"severity":  severityLabel(n),
		},
		"annotations": map[string]string{
			"summary":     n.Message,
			"count":       fmt.Sprint(n.Count),
			"restarts":    fmt.Sprint(n.Restarts),
			"description": describe(n),
		},
		"startsAt": n.FirstSeen.UTC().Format(time.RFC3339Nano),
		"endsAt":   ends.UTC().Format(time.RFC3339Nano),
	}
	b, err := json.Marshal([]any{alert})
	if err != nil {
		return err
	}
	return post(ctx, s.client, s.url, b)
}

// severityLabel keeps the alert's labels the same when it resolves, or
// Alertmanager would see a new alert instead of the end of the old one.
func severityLabel(n Notification) string {
	if n.Status == Resolved {
		return severity(kindOf(n.Kind))
	}
	return n.Severity
}

func describe(n Notification) string {
	parts := supervise.Figures(n.WorkingSet, n.Usage, n.Cache, n.Ceiling, n.Peak)
	if d := n.Diagnosis; d != nil && len(d.Top) > 0 {
		parts = append(parts, fmt.Sprintf("largest: %d %s %s", d.Top[0].Pid, d.Top[0].Command, cgroup.FormatSize(d.Top[0].RSS)))
	}
	if d := n.Diagnosis; d != nil && d.Runtime != nil {
		parts = append(parts, supervise.HeapFigures(d.Runtime))
		if f := d.Runtime.TopFrame(); f != "" {
			parts = append(parts, "at "+f)
		}
	}
	return strings.Join(parts, "; ")
}

// execSink runs a command with the JSON on stdin: mail, ntfy, anything.
type execSink struct {
	cmd string
}

// NewExecSink runs cmd with sh -c for each notification.
func NewExecSink(cmd string) Sink { return &execSink{cmd: cmd} }

func (s *execSink) Name() string {
	// The command line may hold a token; its first word does not.
	f := strings.Fields(s.cmd)
	if len(f) == 0 {
		return "exec"
	}
	return "exec:" + f[0]
}

func (s *execSink) key() string { return "exec\x00" + s.cmd }

// Send runs the hook once and waits for it. It is started through
// supervise.StartHelper: as an init, guardrun reaps every child with
// wait4(-1), and a plain Wait would then see ECHILD, call the run a
// failure and run the hook again (issue 11). The hook gets a process group
// of its own, so that at the timeout what it started (a curl, a mail) is
// killed with it rather than left behind.
func (s *execSink) Send(ctx context.Context, n Notification) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	c := exec.Command("/bin/sh", "-c", s.cmd)
	c.Stdin = bytes.NewReader(b)
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	c.Env = append(os.Environ(), "GUARDRUN_NOTIFY_KIND="+n.Kind, "GUARDRUN_NOTIFY_STATUS="+n.Status, "GUARDRUN_NOTIFY_RUN="+n.Run)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A grandchild that keeps stdin open must not hold Wait past the
	// hook's own exit.
	c.WaitDelay = time.Second
	wait, err := supervise.StartHelper(c)
	if err != nil {
		return err
	}
	pgid := c.Process.Pid
	stop := context.AfterFunc(ctx, func() { unix.Kill(-pgid, unix.SIGKILL) })
	st, err := wait()
	killed := !stop() // the timeout or the exit deadline came while it ran
	switch {
	case err != nil:
		return err
	case st.Exited() && st.ExitStatus() == 0:
		return nil
	case killed:
		return fmt.Errorf("killed with its process group: %w", ctx.Err())
	}
	return supervise.StatusError(st)
}

// secretWords mark a command-line flag whose value is likely a secret.
var secretWords = []string{"token", "secret", "password", "passwd", "apikey", "api-key", "api_key", "auth", "credential"}

// RedactArgs returns a command line fit for a notification, report or
// status output: URLs keep only their receiver (Redact), and the value of
// a --flag=VALUE or a following argument whose flag names a secret
// (--token, --api-key, ...) is replaced by "…". ps shows the real argv to
// anyone on the host; guardrun need not carry it further.
func RedactArgs(argv []string) []string {
	out := make([]string, len(argv))
	secretNext := false
	for i, a := range argv {
		switch {
		case secretNext:
			a, secretNext = "…", false
		case strings.HasPrefix(a, "-") && isSecretFlag(a):
			if k, _, ok := strings.Cut(a, "="); ok {
				a = k + "=…"
			} else {
				secretNext = true
			}
		case strings.Contains(a, "://"):
			if u, err := url.Parse(a); err == nil && u.Host != "" {
				a = Redact(a)
			}
		}
		out[i] = a
	}
	return out
}

func isSecretFlag(a string) bool {
	k, _, _ := strings.Cut(strings.ToLower(a), "=")
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}
