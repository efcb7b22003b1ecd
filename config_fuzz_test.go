package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/urfave/cli/v2"
)

// FuzzConfig: any --config file either loads into settings or is refused
// with one user error (exit 125, a message); it never panics and never
// runs anything (the action here only loads).
func FuzzConfig(f *testing.F) {
	for _, s := range []string{
		"max = \"512M\"\nrestart = \"always\"\nrestart-at = \"90%\"\n",
		"notify = [\"http://127.0.0.1:1/x\", \"alertmanager+http://127.0.0.1:9093\"]\n",
		"mx = \"512M\"\n", "max = 512M\n", "max = 5\n", "pids-max = \"x\"\n", "stop-timeout = 3\n",
		"quiet = true\nlog-format = \"json\"\n", "[table]\nmax = \"1G\"\n", "max = [1, 2]\n",
	} {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		// guardrun's own app, with an action that only loads.
		code := 0
		app := newApp(nopWriter{}, nopWriter{}, &code)
		app.Action = func(c *cli.Context) error {
			command, err := readConfig(c, flags())
			if err != nil {
				return err
			}
			s, err := loadSettings(c, command)
			if s != nil {
				s.listen.close() // a listen = [...] the fuzzer found binds
			}
			return err
		}
		err := app.Run([]string{"guardrun", "--config", path, "--", "true"})
		var ue *userError
		if err != nil && (!errors.As(err, &ue) || ue.code != 125 || ue.msg == "") {
			t.Fatalf("config %q: %v (%T), want a user error with exit 125", content, err, err)
		}
	})
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
