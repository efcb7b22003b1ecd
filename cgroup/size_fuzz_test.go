package cgroup

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseSize: any input either parses to a size of at least 1 byte that
// FormatSize can print, or fails with a SizeError naming the input; plain
// digits parse to themselves; CheckFloor refuses exactly what is below
// MinCeiling, and what it guesses parses to a size that it takes.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "1.5G", "50%", "0", "5X", "", "1e3", "9999999T", "12 MiB", "%", "-1", ".5K", "100%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		v, err := ParseSize(in, 16<<30)
		if err != nil {
			var se *SizeError
			if !errors.As(err, &se) || se.Input != in || se.Reason == "" {
				t.Fatalf("ParseSize(%q): %v is not a SizeError naming the input", in, err)
			}
			return
		}
		if v < 1 {
			t.Fatalf("ParseSize(%q) = %d", in, v)
		}
		if FormatSize(v) == "" {
			t.Fatalf("FormatSize(%d) is empty", v)
		}
		// Below the floor, a guessed unit is itself a size at the floor
		// or above, and within the bound.
		var se *SizeError
		if err := CheckFloor(in, v, 16<<30); (err == nil) != (v >= MinCeiling) || (err != nil && (!errors.As(err, &se) || len(se.Hints) == 0)) {
			t.Fatalf("CheckFloor(%q, %d) = %v", in, v, err)
		} else if err != nil {
			if g, ok := strings.CutPrefix(se.Hints[0], "did you mean "); ok {
				gv, gerr := ParseSize(strings.TrimSuffix(g, "?"), 16<<30)
				if gerr != nil || gv < MinCeiling || gv > 16<<30 {
					t.Fatalf("CheckFloor(%q) guesses %q = %d, %v", in, g, gv, gerr)
				}
			}
		}
		if d := strings.TrimSpace(in); d != "" && strings.Trim(d, "0123456789") == "" {
			if n, err := strconv.ParseUint(d, 10, 64); err == nil && n != v {
				t.Fatalf("ParseSize(%q) = %d, want %d", in, v, n)
			}
		}
	})
}
