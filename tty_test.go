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
	testchild.RequireTool(t, "apt-get install tmux", "tmux")
	testchild.RequireTool(t, "apt-get install bash", "bash")
	exe, _ := os.Executable()
	sock := fmt.Sprintf("guardrun-test-%d", os.Getpid())
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// sh reports guardrun's exit status on the screen (tmux's own
	// pane_dead_status can lag the pane's death by seconds).
	cmd := fmt.Sprintf("env %s=1 PS1='prompt> ' %s --max 256M --name tty -- bash --norc --noprofile -i; echo guardrun-exit=$?; sleep 60", asGuardrun, exe)
	tmux("new-session", "-d", "-s", "t", "-x", "150", "-y", "40", cmd)
	defer exec.Command("tmux", "-L", sock, "kill-server").Run()
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
	// Bring it back and interrupt it: fg and Ctrl-C, as at a bare prompt.
	typeLine("fg")
	time.Sleep(300 * time.Millisecond)
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
