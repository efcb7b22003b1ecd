package proc

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// statLine is a stat line as Linux 6.x prints it, with comm and state
// put in: fields 3 on are those of a real cat(1) but for state.
func statLine(comm string, state byte) string {
	return "4347 (" + comm + ") " + string(state) + " 4345 4340 7511 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 2 0 56085 3133440 393 " +
		"18446744073709551615 94364932489216 94364932509097 140733065974272 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 " +
		"94364932525104 94364932526720 94365840072704 140733065980602 140733065980622 140733065980622 140733065981931 0\n"
}

func TestParseStat(t *testing.T) {
	want := func(comm string, state byte) Stat {
		return Stat{Pid: 4347, PPid: 4345, PGrp: 4340, Session: 7511, Comm: comm, State: state,
			UTime: 7, STime: 3, Threads: 2, StartTime: 56085, VSize: 3133440, RSS: 393 * 4096}
	}
	for _, tc := range []struct {
		name, comm string
		state      byte
	}{
		{"plain", "cat", 'R'},
		{"spaces", "my prog", 'S'},
		{"a closing parenthesis", "a) b", 'S'},
		{"what looks like the next fields", "x) R 1 2 3 (", 'D'},
		{"nested parentheses", "((sd-pam))", 'S'},
		{"only parentheses", ")()(", 'Z'},
		{"empty", "", 'I'},
		{"a kernel thread's 64 bytes", strings.Repeat("kworker/u8:0-", 4) + "events_unbo", 'I'},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(statLine(tc.comm, tc.state)), 4096)
			if err != nil {
				t.Fatal(err)
			}
			if got != want(tc.comm, tc.state) {
				t.Fatalf("parseStat = %+v\nwant         %+v", got, want(tc.comm, tc.state))
			}
		})
	}
}

func TestParseStatRefuses(t *testing.T) {
	for _, tc := range []struct{ name, line, err string }{
		{"no comm", "4347 cat R 4345\n", "no (comm)"},
		{"comm not closed", "4347 (cat R 4345\n", "no (comm)"},
		{"no pid", "(cat) R 4345\n", `pid ""`},
		{"short", "4347 (cat) R 4345 4340 7511 0 -1\n", "8 fields, want at least 24"},
		{"cut at rss", strings.TrimSuffix(statLine("cat", 'R')[:strings.Index(statLine("cat", 'R'), " 393 ")], "\n"), "23 fields, want at least 24"},
		{"a negative ppid", strings.Replace(statLine("cat", 'R'), "R 4345", "R -4345", 1), `field 4 "-4345"`},
		{"an overflow", strings.Replace(statLine("cat", 'R'), " 56085 ", " 18446744073709551616 ", 1), `field 22 "18446744073709551616"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseStat([]byte(tc.line), 4096)
			if err == nil || err.Error() != tc.err {
				t.Fatalf("parseStat = %+v, %v; want error %q", s, err, tc.err)
			}
		})
	}
}

// Fields parseStat does not read may be negative (tty_pgrp, priority of a
// real-time task): they must not fail the line.
func TestParseStatSkipsSignedFields(t *testing.T) {
	// tty_pgrp (field 8) is -1 already.
	line := strings.Replace(statLine("rt", 'S'), " 20 0 2 0 ", " -51 0 2 0 ", 1) // priority, field 18
	if _, err := parseStat([]byte(line), 4096); err != nil {
		t.Fatal(err)
	}
}

func TestAtou(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "7": 7, "18446744073709551615": 1<<64 - 1} {
		if got, ok := atou([]byte(in)); !ok || got != want {
			t.Errorf("atou(%q) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "-1", "+1", "1 ", "0x10", "18446744073709551616", "99999999999999999999"} {
		if got, ok := atou([]byte(in)); ok {
			t.Errorf("atou(%q) = %d, want a refusal", in, got)
		}
	}
}

func write(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadMemInfo(t *testing.T) {
	const head = "MemTotal:       24683568 kB\nMemFree:        24095248 kB\n"
	const tail = "Buffers:            3772 kB\nCached:           402812 kB\nSwapCached:            0 kB\n" +
		"SwapTotal:       2097148 kB\nSwapFree:        2097000 kB\nSReclaimable:      60000 kB\nHugePages_Total:       0\n"
	for _, tc := range []struct {
		name, file string
		avail      uint64
	}{
		{"MemAvailable", head + "MemAvailable:   24322684 kB\n" + tail, 24322684 << 10},
		// Before Linux 3.14: MemFree + Cached + SReclaimable.
		{"no MemAvailable", head + tail, (24095248 + 402812 + 60000) << 10},
		{"no newline at the end", head + "MemAvailable:   24322684 kB\n" + strings.TrimSuffix(tail, "\n"), 24322684 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := readMemInfo(write(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			want := MemInfo{Total: 24683568 << 10, Free: 24095248 << 10, Available: tc.avail, SwapTotal: 2097148 << 10, SwapFree: 2097000 << 10}
			if m != want {
				t.Fatalf("readMemInfo = %+v, want %+v", m, want)
			}
		})
	}
	for _, bad := range []string{"MemTotal: 12 MB\n", "MemTotal: twelve kB\n", "MemTotal:\n"} {
		p := write(t, bad)
		if _, err := readMemInfo(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("readMemInfo of %q: %v, want an error naming %s", bad, err, p)
		}
	}
}

func TestReadMemInfoMissing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meminfo")
	_, err := readMemInfo(p)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err %v: want ErrNotExist naming %s", err, p)
	}
}

func TestBootTimeParse(t *testing.T) {
	// The intr line is longer than readFile's first buffer on a large
	// machine: the btime after it must still be found.
	intr := "intr 1" + strings.Repeat(" 0", 10000) + "\n"
	p := write(t, "cpu  1 2 3 4\ncpu0 1 2 3 4\n"+intr+"ctxt 8\nbtime 1700000000\nprocesses 9\n")
	got, err := bootTime(p)
	if err != nil || !got.Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("bootTime = %v, %v", got, err)
	}
	if _, err := bootTime(write(t, "cpu  1 2 3 4\n")); err == nil || !strings.Contains(err.Error(), "no btime") {
		t.Fatalf("no btime: %v", err)
	}
}
