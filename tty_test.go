package main

import (
	"fmt"
	"os"
	"os/exec"
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
	for _, tool := range []string{"tmux", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("GUARDRUN_TEST_REQUIRE") == "1" && os.Getenv("GUARDRUN_TEST_BACKEND") != "v2" {
				t.Fatalf("needs %s, and GUARDRUN_TEST_REQUIRE=1 forbids skipping", tool)
			}
			t.Skipf("needs %s", tool)
		}
	}
	exe, _ := os.Executable()
	sock := fmt.Sprintf("guardrun-test-%d", os.Getpid())
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cmd := fmt.Sprintf("env %s=1 PS1='prompt> ' %s --max 256M --name tty -- bash --norc --noprofile -i", asGuardrun, exe)
	tmux("new-session", "-d", "-s", "t", "-x", "150", "-y", "40", cmd)
	defer exec.Command("tmux", "-L", sock, "kill-server").Run()
	tmux("set-option", "-t", "t", "remain-on-exit", "on")
	screen := func() string { return tmux("capture-pane", "-p", "-t", "t") }
	waitFor := func(want string) {
		t.Helper()
		for i := 0; i < 500; i++ {
			if strings.Contains(screen(), want) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("screen never showed %q:\n%s", want, screen())
	}
	typeLine := func(s string) { tmux("send-keys", "-t", "t", s, "Enter") }

	waitFor("prompt>")
	typeLine("sleep 300")
	time.Sleep(300 * time.Millisecond)
	tmux("send-keys", "-t", "t", "C-c")
	typeLine("echo after-ctrl-c-$((6*7))")
	waitFor("after-ctrl-c-42")

	typeLine("sleep 301")
	time.Sleep(300 * time.Millisecond)
	tmux("send-keys", "-t", "t", "C-z")
	waitFor("Stopped")
	typeLine("jobs; echo jobs-listed")
	waitFor("jobs-listed")
	typeLine("kill -KILL %1; echo killed-job")
	waitFor("killed-job")
	typeLine("exit 7")
	waitFor("guardrun: tty exited 7")
	s := screen()
	if strings.Contains(s, "no job control") || strings.Contains(s, "cannot set terminal process group") {
		t.Fatalf("bash lost its terminal under guardrun:\n%s", s)
	}
	if !strings.Contains(s, "sleep 301") {
		t.Fatalf("jobs did not list the stopped job:\n%s", s)
	}
	// The summary is guardrun's last act; its exit reaches tmux a moment later.
	for i := 0; i < 500 && strings.TrimSpace(tmux("display-message", "-p", "-t", "t", "#{pane_dead}")) != "1"; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if got := strings.TrimSpace(tmux("display-message", "-p", "-t", "t", "#{pane_dead_status}")); got != "7" {
		t.Fatalf("guardrun exited %q, want 7:\n%s", got, s)
	}
}
