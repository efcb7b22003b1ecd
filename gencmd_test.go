package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/guardrun/guardrun/internal/testchild"
	"github.com/urfave/cli/v2"
)

// generated is what `guardrun ARGS...` prints, run in-process.
func generated(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(append([]string{"guardrun"}, args...), &out, &errb); code != 0 || errb.Len() > 0 {
		t.Fatalf("guardrun %s: exit %d, stderr %q", strings.Join(args, " "), code, errb.String())
	}
	return out.String()
}

// writeTemp writes s to a file of its own and returns its path.
func writeTemp(t *testing.T, name, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// everyFlag is each flag name of the app and its commands, as typed.
func everyFlag() []string {
	app := newApp(io.Discard, io.Discard, new(int))
	var out []string
	add := func(fs []cli.Flag) {
		for _, f := range fs {
			for _, n := range f.Names() {
				if len(n) == 1 {
					n = "-" + n
				} else {
					n = "--" + n
				}
				if !slices.Contains(out, n) {
					out = append(out, n)
				}
			}
		}
	}
	add(app.Flags)
	for _, c := range app.Commands {
		add(c.Flags)
	}
	return out
}

// TestManPage: guardrun man is roff that groff takes without a warning
// (-ww: all of them), in the sections of man-pages(7), naming every flag,
// every GUARDRUN_* variable and every command.
func TestManPage(t *testing.T) {
	groff := testchild.RequireTool(t, "apt-get install groff-base", "groff")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	page := generated(t, "man")
	path := writeTemp(t, "guardrun.1", page)

	var stderr bytes.Buffer
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", path)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("groff -man -Tutf8 -ww: %v: %s", err, stderr.String())
	}
	// -Tascii renders \- as the ASCII minus, so the text can be searched
	// for flags as a reader would type them.
	cmd = exec.Command(groff, "-man", "-Tascii", "-ww", "-P", "-cbou", path)
	cmd.Stderr = &stderr
	text, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("groff -man -Tascii: %v: %s", err, stderr.String())
	}
	rendered := string(text)

	if !strings.Contains(page, `.TH GUARDRUN 1 "2023-11-14"`) {
		t.Errorf("no .TH line dated by SOURCE_DATE_EPOCH in:\n%s", firstLines(page, 3))
	}
	for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"} {
		if !strings.Contains(page, "\n.SH "+section+"\n") {
			t.Errorf("no section %s", section)
		}
	}
	for _, f := range everyFlag() {
		if !strings.Contains(rendered, f) {
			t.Errorf("flag %s is not in the rendered page", f)
		}
		if !strings.Contains(page, `\fB`+strings.ReplaceAll(f, "-", `\-`)+`\fR`) {
			t.Errorf("flag %s is not set in bold with \\- dashes", f)
		}
	}
	app := newApp(io.Discard, io.Discard, new(int))
	for _, f := range app.Flags {
		for _, e := range f.(cli.DocGenerationFlag).GetEnvVars() {
			if !strings.Contains(rendered, e) {
				t.Errorf("%s is not in ENVIRONMENT", e)
			}
		}
	}
	for _, c := range app.Commands {
		if !strings.Contains(rendered, "guardrun "+c.Name) {
			t.Errorf("command %s is not in SYNOPSIS", c.Name)
		}
	}
	exit := rendered[strings.Index(rendered, "EXIT STATUS"):]
	for _, code := range []string{"128+N", "137", "125", "126", "127"} {
		if !strings.Contains(exit, "\n       "+code+" ") {
			t.Errorf("exit status %s is not listed under EXIT STATUS", code)
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// TestCompletionBash: the script loads (complete -p names its function),
// and completes flags, their values, commands and the child's command line,
// both in a bare bash and with bash-completion loaded, as it is from
// /usr/share/bash-completion/completions.
func TestCompletionBash(t *testing.T) {
	bash := testchild.RequireTool(t, "apt-get install bash", "bash")
	script := writeTemp(t, "guardrun.bash", generated(t, "completion", "bash"))
	out, err := exec.Command(bash, "-c", `source "$1" && complete -p guardrun`, "bash", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "complete -F _guardrun guardrun" {
		t.Fatalf("complete -p guardrun: %v: %s", err, out)
	}

	// complete LINE prints COMPREPLY for LINE with the cursor at its end,
	// as bash sets COMP_WORDS when TAB is pressed there.
	const harness = `
[[ $BC == 1 ]] && source /usr/share/bash-completion/bash_completion
source "$1"
line=$2
read -ra COMP_WORDS <<<"$line"
[[ $line == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$((${#COMP_WORDS[@]} - 1)) COMP_LINE=$line COMP_POINT=${#line}
_guardrun 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"
`
	// Commands come and go; the script offers whichever the app has.
	var st []string
	for _, c := range newApp(io.Discard, io.Discard, new(int)).Commands {
		if strings.HasPrefix(c.Name, "st") {
			st = append(st, c.Name)
		}
	}
	dir := t.TempDir()
	for _, f := range []string{"app.toml", "app.env"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	os.Mkdir(filepath.Join(dir, "srv"), 0o755)
	for _, tc := range []struct{ line, want string }{
		{"guardrun --restart-o", "--restart-on-pressure"},
		{"guardrun --restart ", "no on-failure always"},
		{"guardrun --max 512M --cgroup v", "v2 v1"},
		{"guardrun --kill-mode ", "control-group mixed process"},
		{"guardrun --stop-signal TE", "TERM"},
		{"guardrun --config app.t", "app.toml"},
		{"guardrun --chdir s", "srv"},
		{"guardrun st", strings.Join(st, " ")},
		{"guardrun status --j", "--json"},
		{"guardrun completion ", "bash zsh fish"},
		{"guardrun -q --max 512M -- guardrun-no-such-comman", ""},
		{"guardrun --max 512M -- sh -c --restart", ""}, // the child's, not guardrun's
	} {
		for _, bc := range []string{"0", "1"} {
			if _, err := os.Stat("/usr/share/bash-completion/bash_completion"); bc == "1" && err != nil {
				continue
			}
			cmd := exec.Command(bash, "-c", harness, "bash", script, tc.line)
			cmd.Dir, cmd.Env = dir, append(os.Environ(), "BC="+bc)
			out, err := cmd.Output()
			got := strings.Join(strings.Fields(string(out)), " ")
			if err != nil || got != tc.want {
				t.Errorf("BC=%s %q completes to %q (%v), want %q", bc, tc.line, got, err, tc.want)
			}
		}
	}
}

// TestCompletionZsh: zsh parses the script and compinit takes it as
// guardrun's completion. scripts/test installs zsh; without it the test
// skips on a laptop and fails in CI.
func TestCompletionZsh(t *testing.T) {
	zsh := testchild.RequireTool(t, "apt-get install zsh", "zsh")
	script := writeTemp(t, "_guardrun", generated(t, "completion", "zsh"))
	if out, err := exec.Command(zsh, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v: %s", err, out)
	}
	out, err := exec.Command(zsh, "-fc", `autoload -U compinit && compinit -u -D && source "$1" && print -r -- $_comps[guardrun]`, "zsh", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "_guardrun" {
		t.Fatalf("compinit; source: %v: %s", err, out)
	}
}

// TestCompletionFish: fish parses the script, and complete -C, fish's own
// way to ask what a line completes to, offers a flag's values and hands
// the child's command line to the child's completion. scripts/test
// installs fish; without it the test skips on a laptop and fails in CI.
func TestCompletionFish(t *testing.T) {
	fish := testchild.RequireTool(t, "apt-get install fish", "fish")
	script := writeTemp(t, "guardrun.fish", generated(t, "completion", "fish"))
	if out, err := exec.Command(fish, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("fish -n: %v: %s", err, out)
	}
	for _, tc := range []struct{ line, want string }{
		{"guardrun --restart ", "always no on-failure"},
		{"guardrun completion ", "bash fish zsh"},
		{"guardrun -q -- guardrun-no-such-comman", ""},
		{"guardrun status --j", "--json"},
	} {
		out, err := exec.Command(fish, "-c", `source $argv[1]; complete -C $argv[2] | string replace -r '\t.*' ''; true`, script, tc.line).CombinedOutput()
		if got := strings.Join(strings.Fields(string(out)), " "); err != nil || got != tc.want {
			t.Errorf("%q completes to %q (%v), want %q", tc.line, got, err, tc.want)
		}
	}
}

// TestCompletionRefusesOtherShells: one error line, a hint, exit 125.
func TestCompletionRefusesOtherShells(t *testing.T) {
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}, {"man", "extra"}} {
		var out, errb bytes.Buffer
		code := run(append([]string{"guardrun"}, args...), &out, &errb)
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if code != 125 || out.Len() > 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "guardrun: error: ") || !strings.HasPrefix(lines[1], "guardrun: hint: ") {
			t.Errorf("guardrun %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out.String(), errb.String())
		}
	}
}
