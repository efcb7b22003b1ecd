package main

import "github.com/urfave/cli/v2"

// urfave/cli v2 works out a flag's names (Names) with a regexp at every
// call, and at every start asks each flag whether it is set by walking
// every flag's names: for guardrun's ~50 flags some 2,500 regexp runs,
// 0.72 ms of the 0.9 ms `guardrun version` spends in main (pprof of an
// in-process loop). Each flag type guardrun uses is wrapped here so that
// its names are worked out once; every other method is the flag's own.
type (
	namedString struct {
		*cli.StringFlag
		names []string
	}
	namedStringSlice struct {
		*cli.StringSliceFlag
		names []string
	}
	namedDuration struct {
		*cli.DurationFlag
		names []string
	}
	namedBool struct {
		*cli.BoolFlag
		names []string
	}
	namedInt struct {
		*cli.IntFlag
		names []string
	}
	namedInt64 struct {
		*cli.Int64Flag
		names []string
	}
)

func (f namedString) Names() []string      { return f.names }
func (f namedStringSlice) Names() []string { return f.names }
func (f namedDuration) Names() []string    { return f.names }
func (f namedBool) Names() []string        { return f.names }
func (f namedInt) Names() []string         { return f.names }
func (f namedInt64) Names() []string       { return f.names }

// withNames wraps each flag of fs so that its names are worked out once;
// a flag of another type is left as it is.
func withNames(fs []cli.Flag) []cli.Flag {
	out := make([]cli.Flag, len(fs))
	for i, f := range fs {
		switch t := f.(type) {
		case *cli.StringFlag:
			out[i] = namedString{t, t.Names()}
		case *cli.StringSliceFlag:
			out[i] = namedStringSlice{t, t.Names()}
		case *cli.DurationFlag:
			out[i] = namedDuration{t, t.Names()}
		case *cli.BoolFlag:
			out[i] = namedBool{t, t.Names()}
		case *cli.IntFlag:
			out[i] = namedInt{t, t.Names()}
		case *cli.Int64Flag:
			out[i] = namedInt64{t, t.Names()}
		default:
			out[i] = f
		}
	}
	return out
}

// plainFlag is the urfave/cli flag inside f, for a switch on its type.
func plainFlag(f cli.Flag) cli.Flag {
	switch t := f.(type) {
	case namedString:
		return t.StringFlag
	case namedStringSlice:
		return t.StringSliceFlag
	case namedDuration:
		return t.DurationFlag
	case namedBool:
		return t.BoolFlag
	case namedInt:
		return t.IntFlag
	case namedInt64:
		return t.Int64Flag
	}
	return f
}
