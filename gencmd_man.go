package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// manPage is guardrun(1) in roff (man(7) macros), from app: NAME and
// DESCRIPTION from its Usage and Description, OPTIONS and ENVIRONMENT from
// its flags, COMMANDS from its commands, EXIT STATUS from the Description's
// "Exit status:" paragraph. date may be empty.
func manPage(app *cli.App, date string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	title := strings.ToUpper(app.Name)
	w(`.\" %s(1), written by "%s man" from its flag definitions; edit those, not this.`, app.Name, app.Name)
	w(`.TH %s 1 %s %s "User Commands"`, title, roffQuote(date), roffQuote(app.Name+" "+buildVersion()))
	// Left-aligned and unhyphenated, as go-md2man sets its pages: a flag
	// name broken at its hyphen reads as two words.
	w(".nh")
	w(".ad l")
	w(".SH NAME")
	w(`%s \- %s`, app.Name, roffText(app.Usage))

	m := completionModel(app)
	w(".SH SYNOPSIS")
	run, _, _ := strings.Cut(app.UsageText, "\n")
	w("%s", synopsis(run, app.Name))
	for _, c := range m.Commands {
		line := app.Name + " " + c.Name
		if len(c.Options) > 1 { // more than --help
			line += " [flags]"
		}
		if c.Args != "" {
			line += " " + c.Args
		}
		w(".br")
		w("%s", synopsis(line, app.Name, c.Name))
	}

	desc, exit := splitExitStatus(app.Description)
	w(".SH DESCRIPTION")
	paragraphs(&b, desc)

	w(".SH OPTIONS")
	for _, o := range m.Options {
		optionEntry(&b, o)
	}

	w(".SH COMMANDS")
	global := map[string]bool{}
	for _, o := range m.Options {
		global[o.Names[0]] = true
	}
	for _, c := range m.Commands {
		w(".TP")
		w("%s", synopsis(c.Name+" "+c.Args, c.Name))
		w("%s", roffText(c.Usage))
		var same []string
		var own []option
		for _, o := range c.Options {
			switch {
			case o.Names[0] == "--help":
			case global[o.Names[0]]:
				same = append(same, `\fB`+roffText(o.Names[0])+`\fR`)
			default:
				own = append(own, o)
			}
		}
		if len(same) > 0 {
			w(".br")
			w("Flags as for a run (see OPTIONS): %s.", strings.Join(same, ", "))
		}
		if len(own) > 0 {
			w(".RS")
			for _, o := range own {
				optionEntry(&b, o)
			}
			w(".RE")
		}
	}

	if exit != "" {
		w(".SH EXIT STATUS")
		exitStatus(&b, exit)
	}

	w(".SH ENVIRONMENT")
	w("Each variable sets the flag it names, as the flag would; the command line wins over the environment, the environment over \\fB\\-\\-config\\fR.")
	w("An empty variable counts as unset.")
	w(".sp")
	w(".PD 0")
	seen := map[string]bool{}
	env := func(o option) {
		for _, e := range o.Env {
			if !seen[e] {
				seen[e] = true
				w(".TP")
				w(`.B %s`, e)
				w(`as \fB%s\fR`, roffText(o.Names[0]))
			}
		}
	}
	for _, o := range m.Options {
		env(o)
	}
	for _, c := range m.Commands {
		for _, o := range c.Options {
			env(o)
		}
	}

	w(".PD")
	w(".SH FILES")
	w(".TP")
	w(".I /etc/guardrun/*.toml")
	w(`Flags in TOML, read with \fB\-\-config\fR: one key per long flag, e.g. \fBmax = "512M"\fR, and the command to run as a list, \fBcommand = ["node", "/srv/api/app.js"]\fR.`)
	w(`The template unit \fBguardrun@.service\fR runs \fBguardrun \-\-config /etc/guardrun/\fR\fINAME\fR\fB.toml\fR as \fBguardrun@\fR\fINAME\fR.`)
	w(".TP")
	w(".I /etc/guardrun/example.toml")
	w("A commented example of such a file.")
	w(".SH SEE ALSO")
	w(`\fBsystemd.unit\fR(5), \fBsystemd.resource\-control\fR(5), \fBsystemd\-run\fR(1)`)
	return b.String()
}

// optionEntry is one flag as a tagged paragraph: its names and value, its
// usage, default and variable.
func optionEntry(b *strings.Builder, o option) {
	var names []string
	for _, n := range o.Names {
		names = append(names, `\fB`+roffText(n)+`\fR`)
	}
	head := strings.Join(names, ", ")
	if o.Arg != "" {
		head += ` \fI` + roffText(o.Arg) + `\fR`
	}
	fmt.Fprintf(b, ".TP\n%s\n%s\n", head, roffText(sentence(o.Usage)))
	if o.Repeat {
		b.WriteString("May be given more than once.\n")
	}
	if o.Def != "" {
		fmt.Fprintf(b, "Default: %s.\n", roffText(o.Def))
	}
	if len(o.Env) > 0 {
		fmt.Fprintf(b, "Environment: \\fB%s\\fR.\n", strings.Join(o.Env, `\fR, \fB`))
	}
}

// splitExitStatus takes the "Exit status: ..." paragraph out of the
// app's description.
func splitExitStatus(desc string) (rest, exit string) {
	var keep []string
	for _, p := range strings.Split(strings.TrimSpace(desc), "\n\n") {
		if s, ok := strings.CutPrefix(p, "Exit status:"); ok {
			exit = strings.Join(strings.Fields(s), " ")
			continue
		}
		keep = append(keep, p)
	}
	return strings.Join(keep, "\n\n"), exit
}

var exitItemRe = lazyRegexp(`^(\d+(?:\+N)?) (.+)$`)

// exitStatus writes the description's "the child's own; 137 when ...;
// 125 when ..." as a sentence and a list of codes; a part without a code
// leading it stays in the sentence.
func exitStatus(b *strings.Builder, exit string) {
	var lead []string
	var codes [][]string
	for _, item := range strings.Split(strings.TrimSuffix(exit, "."), "; ") {
		if m := exitItemRe().FindStringSubmatch(item); m != nil {
			codes = append(codes, m[1:])
		} else {
			lead = append(lead, item)
		}
	}
	if len(lead) > 0 {
		l := strings.Join(lead, "; ")
		b.WriteString(roffText(strings.ToUpper(l[:1])+l[1:]+", except:") + "\n")
	}
	for _, c := range codes {
		fmt.Fprintf(b, ".TP\n.B %s\n%s\n", roffText(c[0]), roffText(sentence(c[1])))
	}
}

// paragraphs writes text's blank-line separated paragraphs, filled.
func paragraphs(b *strings.Builder, text string) {
	for i, p := range strings.Split(text, "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		for _, line := range strings.Split(strings.TrimSpace(p), "\n") {
			b.WriteString(roffText(strings.TrimSpace(line)) + "\n")
		}
	}
}

// synopsis sets a usage line: the program and command names and flags in
// bold, placeholders in italics, brackets and bars in roman.
func synopsis(line string, literal ...string) string {
	var out []string
	for _, tok := range strings.Fields(line) {
		core := strings.TrimRight(strings.TrimLeft(tok, "["), "].")
		if core == "" {
			out = append(out, roffText(tok))
			continue
		}
		pre := tok[:strings.Index(tok, core)]
		post := tok[len(pre)+len(core):]
		style := `\fI`
		switch {
		case strings.HasPrefix(core, "-"), strings.ToLower(core) == core:
			style = `\fB`
		}
		for _, l := range literal {
			if core == l {
				style = `\fB`
			}
		}
		if core == "flags" {
			style = `\fI`
		}
		out = append(out, roffText(pre)+style+roffText(core)+`\fR`+roffText(post))
	}
	return strings.Join(out, " ")
}

// sentence ends s with a period.
func sentence(s string) string {
	if s == "" || strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

// roffQuote is s as one quoted macro argument.
func roffQuote(s string) string {
	return `"` + strings.ReplaceAll(roffText(s), `"`, `\(dq`) + `"`
}

// roffText escapes s for roff: a backslash is \e, a line may not begin
// with a control character, and the dashes of a word that begins with one
// (--max, -q) are \- so that they render as the ASCII minus a reader can
// copy into a shell; a hyphen inside a word stays a hyphen.
func roffText(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	words := strings.Split(s, " ")
	for i, w := range words {
		if strings.HasPrefix(strings.TrimLeft(w, "([\"'`"), "-") {
			words[i] = strings.ReplaceAll(w, "-", `\-`)
		}
	}
	s = strings.Join(words, " ")
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
