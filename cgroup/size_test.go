package cgroup

import (
	"errors"
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
	for _, in := range []string{"", "5X", "M", "-1G", "0", "0%", "101%", "abc%", "1.2.3G", "1e3", "9999999T", "12 MB", "0.1"} {
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
