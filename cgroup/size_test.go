package cgroup

import (
	"errors"
	"slices"
	"testing"
)

func TestParseSize(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"1", 1},
		{"4096", 4096},
		{"512M", 512 << 20},
		{"512m", 512 << 20},
		{"512MiB", 512 << 20},
		{"2G", 2 * gib},
		{"2 GiB", 2 * gib},
		{"1.5G", 3 * gib / 2},
		{"64K", 64 << 10},
		{"1T", 1 << 40},
		{"100b", 100},
		{"50%", 8 * gib},
		{"100%", 16 * gib},
		{"12.5%", 2 * gib},
	} {
		got, err := ParseSize(tc.in, 16*gib)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "5X", "M", "-1G", "-1", "-50%", "-.5K", "0", "0%", "101%", "abc%", "1.2.3G", "1e3", "9999999T", "12 MB", "0.1"} {
		var se *SizeError
		if got, err := ParseSize(in, 16*gib); !errors.As(err, &se) || se.Input != in {
			t.Errorf("ParseSize(%q) = %d, %v; want a SizeError", in, got, err)
		}
	}
	var se *SizeError
	if _, err := ParseSize("50%", 0); !errors.As(err, &se) {
		t.Errorf("percentage without a known total must fail, got %v", err)
	}
}

func TestFormatSize(t *testing.T) {
	for in, want := range map[uint64]string{
		0:                "0 B",
		1023:             "1023 B",
		1024:             "1 KiB",
		512 << 20:        "512 MiB",
		3 << 29:          "1.5 GiB",
		2 << 40:          "2 TiB",
		5000 << 40:       "5000 TiB",
		512<<20 + 4096:   "512 MiB",
		(1 << 30) - 4096: "1024 MiB",
	} {
		if got := FormatSize(in); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestNegativeSizeSaysSo(t *testing.T) {
	for in, want := range map[string]string{
		"-1":   "a size cannot be negative",
		"-1G":  "a size cannot be negative",
		"-50%": "a size cannot be negative",
		" -.5": "a size cannot be negative",
		"-":    `unknown unit "-"`,
		"-x":   `unknown unit "-x"`,
	} {
		var se *SizeError
		if _, err := ParseSize(in, 16<<30); !errors.As(err, &se) || se.Reason != want {
			t.Errorf("ParseSize(%q): %v, want %q", in, err, want)
		}
	}
}

func TestCheckFloor(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		in     string
		most   uint64
		reason string // "" for no error
		hints  []string
	}{
		{"8M", 16 * gib, "", nil},
		{"512M", 0, "", nil},
		{"256", 16 * gib, "256 bytes cannot hold a process (the least is 8 MiB)", []string{"did you mean 256M?", "a size without a unit is bytes"}},
		{"1", 16 * gib, "1 byte cannot hold a process (the least is 8 MiB)", []string{"did you mean 1G?", "a size without a unit is bytes"}},
		{"256b", 16 * gib, "256 bytes cannot hold a process (the least is 8 MiB)", []string{"did you mean 256M?", "a size without a unit is bytes"}},
		// M first; G where M is still too small; K where M is above RAM.
		{"4", 16 * gib, "4 bytes cannot hold a process (the least is 8 MiB)", []string{"did you mean 4G?", "a size without a unit is bytes"}},
		{"65536", 16 * gib, "64 KiB cannot hold a process (the least is 8 MiB)", []string{"did you mean 65536K?", "a size without a unit is bytes"}},
		{"8192", 16 * gib, "8 KiB cannot hold a process (the least is 8 MiB)", []string{"did you mean 8192M?", "a size without a unit is bytes"}},
		{"8192", 4 * gib, "8 KiB cannot hold a process (the least is 8 MiB)", []string{"did you mean 8192K?", "a size without a unit is bytes"}},
		{"8192", 0, "8 KiB cannot hold a process (the least is 8 MiB)", []string{"did you mean 8192M?", "a size without a unit is bytes"}},
		{"1K", 16 * gib, "1 KiB cannot hold a process (the least is 8 MiB)", []string{"did you mean 1G?"}},
		{"512k", 16 * gib, "512 KiB cannot hold a process (the least is 8 MiB)", []string{"did you mean 512M?"}},
		{"256KiB", 16 * gib, "256 KiB cannot hold a process (the least is 8 MiB)", []string{"did you mean 256MiB?"}},
		{"1.5K", 16 * gib, "1.5 KiB cannot hold a process (the least is 8 MiB)", []string{"did you mean 1.5G?"}},
		// Nothing to guess: a unit that was meant, a guess above the bound, a share.
		{"4M", 16 * gib, "4 MiB cannot hold a process (the least is 8 MiB)", []string{"use at least 8M"}},
		{"900", 512<<20 - 1, "900 bytes cannot hold a process (the least is 8 MiB)", []string{"use at least 8M", "a size without a unit is bytes"}},
		{"0.01%", 16 * gib, "1.6 MiB cannot hold a process (the least is 8 MiB)", []string{"use a larger percentage, or a size of at least 8M"}},
	} {
		v, err := ParseSize(tc.in, 16*gib)
		if err != nil {
			t.Fatalf("ParseSize(%q): %v", tc.in, err)
		}
		err = CheckFloor(tc.in, v, tc.most)
		if tc.reason == "" {
			if err != nil {
				t.Errorf("CheckFloor(%q) = %v, want nil", tc.in, err)
			}
			continue
		}
		var se *SizeError
		if !errors.As(err, &se) || se.Input != tc.in || se.Reason != tc.reason {
			t.Errorf("CheckFloor(%q, %d) = %v, want %q", tc.in, tc.most, err, tc.reason)
			continue
		}
		if !slices.Equal(se.Hints, tc.hints) {
			t.Errorf("CheckFloor(%q, %d) hints %q, want %q", tc.in, tc.most, se.Hints, tc.hints)
		}
	}
}
