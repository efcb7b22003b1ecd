package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
)

// TestTerminalStaysInteractive runs `guardrun -- bash` in a real terminal
// (tmux) and types at it: Ctrl-C must interrupt the foreground job and
// nothing else, and bash must have job control (Ctrl-Z, jobs, fg), as it
// would without guardrun.
func TestTerminalStaysInteractive(t *testing.T) {
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	testchild.RequireTool(t, "apt-get install tmux", "tmux")
	testchild.RequireTool(t, "apt-get install bash", "bash")
	exe, _ := os.Executable()
	// A server of the test's own, at a path no other run shares (a name
	// by pid was reused by -count=N before the last server had exited).
	sock := filepath.Join(t.TempDir(), "tmux")
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// sh reports guardrun's exit status on the screen (tmux's own
	// pane_dead_status can lag the pane's death by seconds).
	cmd := fmt.Sprintf("env %s=1 PS1='prompt> ' %s --max 256M --name tty -- bash --norc --noprofile -i; echo guardrun-exit=$?; sleep 60", asGuardrun, exe)
	tmux("new-session", "-d", "-s", "t", "-x", "150", "-y", "40", cmd)
	defer exec.Command("tmux", "-S", sock, "kill-server").Run()
	screen := func() string { return tmux("capture-pane", "-p", "-t", "t") }
	// until polls ok every 20 ms for at most 10 s; got says what was
	// there instead.
	until := func(what string, ok func() bool, got func() string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s within 10s; got:\n%s", what, got())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor := func(want string) {
		t.Helper()
		until(fmt.Sprintf("screen never showed %q", want), func() bool { return strings.Contains(screen(), want) }, screen)
	}
	// The terminal's foreground process group, by its leader's name:
	// tmux reads it with tcgetpgrp on the pane's pty. Ctrl-C and Ctrl-Z
	// are sent once the job has the terminal, and has exec'd sleep: sent
	// before, they would reach bash, not the job.
	foreground := func() string {
		return strings.TrimSpace(tmux("display-message", "-p", "-t", "t", "#{pane_current_command}"))
	}
	waitForeground := func(want string) {
		t.Helper()
		until(fmt.Sprintf("%s did not get the terminal", want), func() bool { return foreground() == want }, foreground)
	}
	typeLine := func(s string) { tmux("send-keys", "-t", "t", s, "Enter") }

	waitFor("prompt>")
	typeLine("sleep 300")
	waitForeground("sleep")
	tmux("send-keys", "-t", "t", "C-c")
	typeLine("echo after-ctrl-c-$((6*7))")
	waitFor("after-ctrl-c-42")

	typeLine("sleep 301")
	waitForeground("sleep")
	tmux("send-keys", "-t", "t", "C-z")
	waitFor("Stopped")
	typeLine("jobs; echo jobs-listed")
	waitFor("jobs-listed")
	// Bring it back and interrupt it: fg and Ctrl-C, as at a bare prompt.
	// (bash has the terminal back after Ctrl-Z, so the wait sees fg's
	// handover, not the stopped job.)
	typeLine("fg")
	waitForeground("sleep")
	tmux("send-keys", "-t", "t", "C-c")
	typeLine("echo back-$((1+1)) jobs=$(jobs | wc -l)")
	waitFor("back-2 jobs=0")
	typeLine("exit 7")
	waitFor("guardrun: tty exited 7")
	waitFor("guardrun-exit=7")
	if s := screen(); strings.Contains(s, "no job control") || strings.Contains(s, "cannot set terminal process group") {
		t.Fatalf("bash lost its terminal under guardrun:\n%s", s)
	}
}
