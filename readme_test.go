package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/internal/testchild"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestREADMEExamples runs every example on README.md's front page as it is
// written there: the example marked <!-- example: NAME --> by
// testdata/readme/NAME.txt, which takes the example's blocks out of
// README.md (readmeblock), so a README that changes is a README that is
// run again. No example goes untested: each one has its script and each
// script its example.
func TestREADMEExamples(t *testing.T) {
	examples := readmeExamples(t)
	scripts, _ := filepath.Glob("testdata/readme/*.txt")
	var names []string
	for _, s := range scripts {
		names = append(names, strings.TrimSuffix(filepath.Base(s), ".txt"))
	}
	for name := range examples {
		if !slices.Contains(names, name) {
			t.Errorf("README example %q has no testdata/readme/%s.txt", name, name)
		}
	}
	for _, n := range names {
		if _, ok := examples[n]; !ok {
			t.Errorf("testdata/readme/%s.txt runs no README example (no <!-- example: %s --> in README.md)", n, n)
		}
	}
	h := cgroup.Discover()
	testchild.RequireCgroup(t, h.Version(), "")
	p := scriptParams("testdata/readme", h)
	p.Cmds["readmeblock"] = func(ts *testscript.TestScript, neg bool, args []string) {
		cmdReadmeBlock(ts, examples, args)
	}
	p.Cmds["dockercmd"] = cmdDockerCmd
	testscript.Run(t, p)
}

// readmeExamples maps each example's name to its fenced blocks, in order:
// those between its marker and the next marker or heading.
func readmeExamples(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	marker := regexp.MustCompile(`^<!-- example: ([a-z0-9-]+) -->$`)
	examples := map[string][]string{}
	var name string
	var block []string
	inBlock := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case inBlock && line == "```":
			examples[name] = append(examples[name], strings.Join(block, "\n")+"\n")
			inBlock = false
		case inBlock:
			block = append(block, line)
		case marker.MatchString(line):
			name = marker.FindStringSubmatch(line)[1]
			if _, dup := examples[name]; dup {
				t.Fatalf("README.md has two examples named %q", name)
			}
			examples[name] = nil
		case strings.HasPrefix(line, "#"):
			name = ""
		case name != "" && strings.HasPrefix(line, "```"):
			inBlock, block = true, nil
		}
	}
	if len(examples) == 0 {
		t.Fatal("README.md marks no examples")
	}
	return examples
}

// readmeblock NAME N FILE [OLD=>NEW...]: write block N (from 1) of README
// example NAME to FILE, with each OLD replaced by NEW (only ever a path or
// an address the script must make its own: say so in the script).
func cmdReadmeBlock(ts *testscript.TestScript, examples map[string][]string, args []string) {
	if len(args) < 3 {
		ts.Fatalf("usage: readmeblock NAME N FILE [OLD=>NEW...]")
	}
	blocks, ok := examples[args[0]]
	n, err := strconv.Atoi(args[1])
	if !ok || err != nil || n < 1 || n > len(blocks) {
		ts.Fatalf("README example %q has no block %s (it has %d)", args[0], args[1], len(blocks))
	}
	text := blocks[n-1]
	for _, sub := range args[3:] {
		old, new, ok := strings.Cut(sub, "=>")
		if !ok || !strings.Contains(text, old) {
			ts.Fatalf("readmeblock: %q is not OLD=>NEW of something in the block:\n%s", sub, text)
		}
		text = strings.ReplaceAll(text, old, new)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), []byte(text), 0o644))
}

// dockercmd DOCKERFILE SCRIPT: write SCRIPT, a shell script that execs the
// Dockerfile's ENTRYPOINT followed by its CMD (both in exec form), the
// argv a container engine would start.
func cmdDockerCmd(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: dockercmd DOCKERFILE SCRIPT")
	}
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	var argv []string
	for _, instr := range []string{"ENTRYPOINT", "CMD"} {
		for _, line := range strings.Split(string(b), "\n") {
			rest, ok := strings.CutPrefix(line, instr+" ")
			if !ok {
				continue
			}
			var words []string
			if err := json.Unmarshal([]byte(rest), &words); err != nil {
				ts.Fatalf("%s %s: not the exec form (a JSON list): %v", instr, rest, err)
			}
			argv = append(argv, words...)
		}
	}
	if len(argv) == 0 {
		ts.Fatalf("%s has neither ENTRYPOINT nor CMD", args[0])
	}
	script := "exec"
	for _, w := range argv {
		script += " '" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(script+"\n"), 0o644))
	fmt.Fprintf(ts.Stdout(), "%s\n", script)
}
