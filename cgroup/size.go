package cgroup

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// SizeError is a size ParseSize refused; Reason says why in a few words.
type SizeError struct{ Input, Reason string }

func (e *SizeError) Error() string { return fmt.Sprintf("size %q: %s", e.Input, e.Reason) }

func sizeErr(in, format string, a ...any) error {
	return &SizeError{Input: in, Reason: fmt.Sprintf(format, a...)}
}

// SizeHint says what ParseSize accepts; the CLI prints it under an error.
const SizeHint = "use bytes, K, M, G, T or KiB, MiB, GiB, TiB (base 1024, as systemd), or a percentage of physical RAM like 50%"

var units = map[string]uint64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tib": 1 << 40,
}

// ParseSize reads a memory size: plain bytes, a base-1024 unit (K, M, G, T,
// or KiB..TiB; case-insensitive, as systemd's MemoryMax=), or N% of total.
// Decimal fractions are allowed ("1.5G"). Zero is refused: a zero ceiling
// would kill the child before its first instruction.
func ParseSize(s string, total uint64) (uint64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, sizeErr(s, "empty")
	}
	if pct, ok := strings.CutSuffix(in, "%"); ok {
		p, err := strconv.ParseFloat(pct, 64)
		if err != nil || math.IsNaN(p) || p <= 0 || p > 100 {
			return 0, sizeErr(s, "percentage must be above 0 and at most 100")
		}
		if total == 0 {
			return 0, sizeErr(s, "physical memory size is unknown")
		}
		return uint64(float64(total) * p / 100), nil
	}
	i := strings.IndexFunc(in, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := in, ""
	if i >= 0 {
		num, unit = in[:i], strings.ToLower(strings.TrimSpace(in[i:]))
	}
	mult, ok := units[unit]
	if !ok {
		return 0, sizeErr(s, "unknown unit %q", in[i:])
	}
	if num != "" && strings.Trim(num, "0123456789") == "" {
		// Whole numbers stay exact: a float64 would round a large byte
		// count (found by FuzzParseSize).
		n, err := strconv.ParseUint(num, 10, 64)
		switch {
		case err != nil || n > math.MaxInt64/mult:
			return 0, sizeErr(s, "too large")
		case n == 0:
			return 0, sizeErr(s, "must be at least 1 byte")
		}
		return n * mult, nil
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, sizeErr(s, "not a number")
	}
	b := v * float64(mult)
	if b < 1 {
		return 0, sizeErr(s, "must be at least 1 byte")
	}
	if b >= math.MaxInt64 {
		return 0, sizeErr(s, "too large")
	}
	return uint64(b), nil
}

// FormatSize prints bytes the way people read them: 512 MiB, 1.5 GiB.
func FormatSize(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 3; n /= unit {
		div *= unit
		exp++
	}
	v := float64(b) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + []string{"KiB", "MiB", "GiB", "TiB"}[exp]
}
