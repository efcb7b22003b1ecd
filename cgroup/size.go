package cgroup

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// SizeError is a size ParseSize or CheckFloor refused; Reason says why in a
// few words, Hints (if any) how to fix it.
type SizeError struct {
	Input, Reason string
	Hints         []string
}

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
	if rest, ok := strings.CutPrefix(in, "-"); ok && rest != "" && strings.ContainsRune("0123456789.", rune(rest[0])) {
		return 0, sizeErr(s, "a size cannot be negative")
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

// MinCeiling is the least a ceiling (--max) or a threshold on usage
// (--high, --restart-at) may be. Below it no process fits, so such a value
// is a slip (`--max 256`, or `max = 256` in a TOML file, is 256 bytes),
// never a setting, and it is refused before any group is made.
//
// Measured: the least memory.limit_in_bytes (v1) or memory.max (v2) at
// which a process exits 0 three times in three, a fresh group each time:
//
//   - v1, Linux 6.18 (the host), started as v1Group.Start does, from a
//     thread moved into the group: true 288 KiB, cat /dev/null 320 KiB,
//     a Go hello world 1 MiB, node -e 0 7 MiB.
//   - v2, Linux 6.1 (the VM), cloned into the group: cat /dev/null and
//     sh -c : 192 KiB, a Go test binary 1.3 MiB, node -e 0 8 MiB.
//
// 8 MiB is some 25 times what a trivial process needs, and it leaves room
// for what those figures do not show: a kernel with 64 KiB pages (arm64
// distributions ship them) charges each page table and kernel stack in
// 64 KiB pieces; and on v1 guardrun's own thread is in the group while it
// forks the child: a group that runs out of memory then OOM-kills guardrun
// itself (measured here: a process whose thread joined a 256-byte group
// was SIGKILLed by the memcg OOM killer before it could move back). Docker
// refuses a memory limit below 6 MiB for the same reason ("to account for
// overhead during startup", linuxMinMemory in moby's daemon_unix.go).
const MinCeiling = 8 << 20

// CheckFloor refuses a size v, parsed from in, below MinCeiling. Its hint
// guesses the unit that was meant: the same number with M, G or K (a bare
// number is bytes), the first that is at least MinCeiling and, when most
// is not 0, at most most (physical RAM for a ceiling, the ceiling for a
// threshold under it).
func CheckFloor(in string, v, most uint64) error {
	if v >= MinCeiling {
		return nil
	}
	e := &SizeError{Input: in, Reason: fmt.Sprintf("%s cannot hold a process (the least is %s)", bytesWord(v), FormatSize(MinCeiling))}
	least := strconv.FormatUint(MinCeiling>>20, 10) + "M"
	num, unit := splitUnit(strings.TrimSpace(in))
	switch guess := guessUnit(num, unit, most); {
	case guess != "":
		e.Hints = append(e.Hints, "did you mean "+guess+"?")
	case strings.HasSuffix(unit, "%"):
		e.Hints = append(e.Hints, "use a larger percentage, or a size of at least "+least)
	default:
		e.Hints = append(e.Hints, "use at least "+least)
	}
	if unit == "" || strings.EqualFold(unit, "b") {
		e.Hints = append(e.Hints, "a size without a unit is bytes")
	}
	return e
}

// splitUnit splits "256M" into "256" and "M", as ParseSize reads it.
func splitUnit(in string) (num, unit string) {
	i := strings.IndexFunc(in, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		return in, ""
	}
	return in[:i], strings.TrimSpace(in[i:])
}

// guessUnit tries the number with the next larger units. M comes first:
// a ceiling in bare megabytes (`max = 512`) is the common slip; K last,
// for a number too large to be meant in M (65536 on a 16 GiB host).
func guessUnit(num, unit string, most uint64) string {
	var try []string
	switch strings.ToLower(unit) {
	case "", "b":
		try = []string{"M", "G", "K"}
	case "k":
		try = []string{"M", "G"}
	case "kib":
		try = []string{"MiB", "GiB"}
	}
	for _, u := range try {
		v, err := ParseSize(num+u, 0)
		if err == nil && v >= MinCeiling && (most == 0 || v <= most) {
			return num + u
		}
	}
	return ""
}

// bytesWord says a small size in words: "256 bytes", "1 KiB".
func bytesWord(b uint64) string {
	switch {
	case b == 1:
		return "1 byte"
	case b < 1024:
		return fmt.Sprintf("%d bytes", b)
	}
	return FormatSize(b)
}
