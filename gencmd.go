package main

// guardrun completion bash|zsh|fish and guardrun man: the completion
// scripts and the man page guardrun(1), written from the app's own flag
// and command definitions (names, aliases, usage, defaults, GUARDRUN_*
// variables), so that neither can drift from --help. The package ships
// their output (scripts/release); nothing here is written by hand but the
// glue of each format.
//
// urfave/cli has generators of its own, and none is used:
//   - ToMan and ToMarkdown sit behind the urfave_cli_no_docs tag that
//     guardrun is built with (they pull in go-md2man and blackfriday, whose
//     init ran at every start; scripts/build), so the roff is written here.
//   - EnableBashCompletion (and its autocomplete/ scripts for bash and zsh)
//     adds a hidden --generate-bash-completion that urfave/cli looks for as
//     the last word of any command line not holding "--": `guardrun node
//     app.js --generate-bash-completion` would print completions instead of
//     running node, and guardrun must hand a child's arguments on as they
//     are. Its script also evals the line being typed to run guardrun at
//     each TAB, and completes names only, never a flag's value. The scripts
//     here are static: they know which flags take a FILE, a DIR, a USER or
//     one of a few words, and hand the child's command line, after "--", to
//     the shell's completion of that command.
//   - ToFishCompletion works without the docs tag, but it offers no files
//     to any flag of guardrun's (it asks each flag's concrete type for
//     TakesFile, and guardrun's flags are wrapped, flagnames.go), shows the
//     usage's `PLACEHOLDER` backticks, and stops at "--"; fish gets the
//     same static model as bash and zsh.

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/guardrun/guardrun/cgroup"
	"github.com/guardrun/guardrun/supervise"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// shells are the completion scripts guardrun writes.
var shells = []string{"bash", "zsh", "fish"}

func completionCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the completion script for a shell: source <(guardrun completion bash)",
		ArgsUsage: strings.Join(shells, "|"),
		Action: func(c *cli.Context) error {
			shell := c.Args().First()
			if c.NArg() != 1 || !slices.Contains(shells, shell) {
				return usageError(fmt.Sprintf("completion %s: name one shell", strings.Join(c.Args().Slice(), " ")),
					"use guardrun completion bash, zsh or fish")
			}
			return completionTemplate().ExecuteTemplate(stdout, shell, completionModel(c.App))
		},
	}
}

func manCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "man",
		Usage: "print the man page guardrun(1) as roff: guardrun man | man -l -",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("man takes no arguments", "guardrun man > guardrun.1, or guardrun man | man -l -")
			}
			_, err := io.WriteString(stdout, manPage(c.App, manDate()))
			return err
		},
	}
}

// manDate is the page's date: that of SOURCE_DATE_EPOCH, as a reproducible
// build sets it (reproducible-builds.org/specs/source-date-epoch), or none.
func manDate() string {
	if s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		return time.Unix(s, 0).UTC().Format("2006-01-02")
	}
	return ""
}

// option is one flag as the generators see it.
type option struct {
	Names  []string // as typed: --max, -q
	Arg    string   // the value's placeholder (SIZE, FILE); "" for a switch
	Usage  string   // with the placeholder's backticks taken out
	Short  string   // Usage's first clause, for the shells' one-line descriptions
	Def    string   // the default, when it is not the zero value
	Env    []string
	Repeat bool
	Kind   string // what completes the value: file, dir, user, cmd, words or ""
	Words  []string
}

// valueWords are the flags whose values are a fixed list, from the lists
// that the flags' own checks use.
var valueWords = map[string][]string{
	"restart":   policyNames(),
	"cgroup":    cgroup.Backends,
	"kill-mode": supervise.KillModes,
}

func policyNames() []string {
	var out []string
	for _, p := range supervise.Policies {
		out = append(out, string(p))
	}
	return out
}

// signalNames are the names --stop-signal takes (supervise.ParseSignal).
func signalNames() []string {
	var out []string
	for s := unix.Signal(1); s < 32; s++ {
		if n := unix.SignalName(s); n != "" {
			out = append(out, strings.TrimPrefix(n, "SIG"))
		}
	}
	return out
}

func options(fs []cli.Flag) []option {
	var out []option
	for _, f := range fs {
		df, ok := f.(cli.DocGenerationFlag)
		if !ok {
			continue
		}
		o := option{Env: df.GetEnvVars()}
		for _, n := range f.Names() {
			if len(n) == 1 {
				o.Names = append(o.Names, "-"+n)
			} else {
				o.Names = append(o.Names, "--"+n)
			}
		}
		o.Arg, o.Usage = unquoteUsage(df.GetUsage())
		if df.TakesValue() && o.Arg == "" {
			o.Arg = "VALUE"
		}
		o.Short = shortUsage(o.Usage)
		if d := df.GetDefaultText(); !slices.Contains([]string{"", "0", "0s", "false", `""`}, d) {
			if u, err := strconv.Unquote(d); err == nil {
				d = u
			}
			o.Def = d
		}
		_, o.Repeat = plainFlag(f).(*cli.StringSliceFlag)
		name := f.Names()[0]
		switch {
		case !df.TakesValue():
		case valueWords[name] != nil:
			o.Kind, o.Words = "words", valueWords[name]
		case name == "stop-signal":
			o.Kind, o.Words = "words", signalNames()
		case o.Arg == "FILE" || o.Arg == "PATH":
			o.Kind = "file"
		case o.Arg == "DIR":
			o.Kind = "dir"
		case strings.HasPrefix(o.Arg, "USER"):
			o.Kind = "user"
		case o.Arg == "CMD":
			o.Kind = "cmd"
		}
		out = append(out, o)
	}
	return out
}

// unquoteUsage takes the first `word` of a usage out of its backticks and
// returns it as the placeholder, by the rule of urfave/cli's own
// (unexported) unquoteUsage, so that it is the placeholder --help shows.
func unquoteUsage(usage string) (name, rest string) {
	before, after, ok := strings.Cut(usage, "`")
	if !ok {
		return "", usage
	}
	name, after, ok = strings.Cut(after, "`")
	if !ok {
		return "", usage
	}
	return name, before + name + after
}

// shortUsage is a usage's first clause, ahead of the details a shell's
// menu has no room for.
func shortUsage(u string) string {
	for _, sep := range []string{"; ", ": ", ", e.g.", " ("} {
		if i := strings.Index(u, sep); i > 0 {
			u = u[:i]
		}
	}
	return u
}

// command is one of the app's commands as the generators see it.
type command struct {
	Name    string
	Usage   string
	Args    string   // ArgsUsage up to its notes: [NAME], bash|zsh|fish
	Words   []string // the argument's words when Args is a list of them
	Options []option
}

// model is what the completion scripts are written from.
type model struct {
	Name     string
	Options  []option
	Commands []command
	Signals  []string
}

var wordListRe = lazyRegexp(`^[a-z0-9-]+(\|[a-z0-9-]+)+$`)

func completionModel(app *cli.App) model {
	m := model{Name: app.Name, Options: options(app.VisibleFlags())}
	for _, c := range app.VisibleCommands() {
		// urfave/cli adds --help to each command as it runs one.
		fs := c.VisibleFlags()
		if !c.HideHelp && lookupFlag(fs, "help") == nil {
			fs = append(fs, cli.HelpFlag)
		}
		cmd := command{Name: c.Name, Usage: c.Usage, Options: options(fs)}
		// status's ArgsUsage is "[NAME]  (flags come before NAME)": the
		// arguments, two spaces, then a note for --help.
		cmd.Args, _, _ = strings.Cut(c.ArgsUsage, "  ")
		if wordListRe().MatchString(cmd.Args) {
			cmd.Words = strings.Split(cmd.Args, "|")
		}
		m.Commands = append(m.Commands, cmd)
	}
	return m
}

// completionTemplate is parsed when a completion is asked for, not at every
// start.
var completionTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("").Funcs(template.FuncMap{
		"join":   strings.Join,
		"fishq":  func(s string) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'" },
		"zshq":   func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" },
		"zshopt": zshOption,
		"valued": func(os []option) []string {
			var out []string
			for _, o := range os {
				if o.Arg != "" {
					out = append(out, o.Names...)
				}
			}
			return out
		},
		"scoped": func(cmd string, os []option) string {
			var out []string
			for _, o := range os {
				if o.Arg != "" {
					for _, n := range o.Names {
						out = append(out, cmd+":"+n)
					}
				}
			}
			return strings.Join(out, " | ")
		},
		"allOptions": func(m model) []option {
			out := slices.Clone(m.Options)
			for _, c := range m.Commands {
				for _, o := range c.Options {
					if !slices.ContainsFunc(out, func(p option) bool { return p.Names[0] == o.Names[0] }) {
						out = append(out, o)
					}
				}
			}
			return out
		},
		"bashAction": bashAction,
		"spellings": func(os []option) []string {
			var out []string
			for _, o := range os {
				out = append(out, o.Names...)
			}
			return out
		},
		"names": func(cs []command) []string {
			var out []string
			for _, c := range cs {
				out = append(out, c.Name)
			}
			return out
		},
		"zshdesc": func(s string) string { return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s) },
		"dict": func(kv ...any) map[string]any {
			m := map[string]any{}
			for i := 0; i+1 < len(kv); i += 2 {
				m[kv[i].(string)] = kv[i+1]
			}
			return m
		},
	}).Parse(bashTemplate + zshTemplate + fishTemplate))
})

// bashAction completes o's value in bash.
func bashAction(o option) string {
	switch o.Kind {
	case "words":
		return `mapfile -t COMPREPLY < <(compgen -W '` + strings.Join(o.Words, " ") + `' -- "$cur")`
	case "file":
		return "_guardrun_files"
	case "dir":
		return "_guardrun_files -d"
	case "user":
		return `mapfile -t COMPREPLY < <(compgen -u -- "$cur")`
	case "cmd":
		return `mapfile -t COMPREPLY < <(compgen -c -- "$cur")`
	}
	return ""
}

// zshOption is one _arguments spec for o: the names that exclude each
// other, the description, the value's message and its completion.
func zshOption(o option) string {
	desc := "[" + strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`, `:`, `\:`).Replace(o.Short) + "]"
	var value string
	if o.Arg != "" {
		action := " "
		switch o.Kind {
		case "words":
			action = "(" + strings.Join(o.Words, " ") + ")"
		case "file":
			action = "_files"
		case "dir":
			action = "_files -/"
		case "user":
			action = "_users"
		case "cmd":
			action = "_command_names -e"
		}
		value = ":" + strings.ReplaceAll(o.Arg, ":", `\:`) + ":" + action
	}
	spell := func(n string) string {
		switch {
		case o.Arg == "":
			return n
		case strings.HasPrefix(n, "--"):
			return n + "="
		}
		return n + "+"
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	rep := ""
	if o.Repeat {
		rep = "*"
	}
	if len(o.Names) == 1 {
		return q(rep + spell(o.Names[0]) + desc + value)
	}
	var all []string
	for _, n := range o.Names {
		all = append(all, spell(n))
	}
	excl := ""
	if !o.Repeat {
		excl = "(" + strings.Join(o.Names, " ") + ")"
	}
	return q(excl) + "{" + strings.Join(all, ",") + "}" + q(desc+value)
}

// The bash script leans on bash-completion (_init_completion, _filedir,
// _command_offset) where it is loaded, as it is for every file in
// /usr/share/bash-completion/completions, and falls back to compgen when
// it was sourced into a bare bash; there --flag=value is not taken apart.
const bashTemplate = `{{define "bash"}}# bash completion for {{.Name}}(1), written by ` + "`{{.Name}} completion bash`" + ` from its flags.
# shellcheck shell=bash

# _{{.Name}}_takes_value COMMAND WORD: WORD is a flag of COMMAND ("" for a
# run) whose value is the next word.
_{{.Name}}_takes_value() {
	case $1:$2 in
	{{scoped "" .Options}}) return 0 ;;
{{- range .Commands}}{{if valued .Options}}
	{{scoped .Name .Options}}) return 0 ;;{{end}}{{end}}
	esac
	return 1
}

# _{{.Name}}_value FLAG: complete FLAG's value.
_{{.Name}}_value() {
	case $1 in
{{- range allOptions .}}{{if .Kind}}
	{{join .Names " | "}}) {{bashAction .}} ;;{{end}}{{end}}
	esac
}

_{{.Name}}_files() {
	if declare -F _filedir >/dev/null 2>&1; then
		_filedir "$@"
		return
	fi
	compopt -o filenames 2>/dev/null
	if [[ ${1-} == -d ]]; then
		mapfile -t COMPREPLY < <(compgen -d -- "$cur")
	else
		mapfile -t COMPREPLY < <(compgen -f -- "$cur")
	fi
}

# _{{.Name}}_child I: words from I on are the command guardrun runs.
_{{.Name}}_child() {
	# _command_offset counts in COMP_WORDS; use it only where words is
	# COMP_WORDS unchanged (no --flag=value rejoined).
	if declare -F _command_offset >/dev/null 2>&1 && ((${#words[@]} == ${#COMP_WORDS[@]})); then
		_command_offset "$1"
	elif (($1 == cword)); then
		mapfile -t COMPREPLY < <(compgen -c -- "$cur")
	else
		_{{.Name}}_files
	fi
}

_{{.Name}}() {
	local cur prev words cword split=false
	if declare -F _init_completion >/dev/null 2>&1; then
		_init_completion -s || return
	else
		words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
		cur=${words[cword]} prev=${words[cword - 1]}
	fi
	# Which command this is (status, check, ...), and where the child's
	# command line begins: after --, or at the first word that is no flag,
	# no flag's value and no command (guardrun node app.js).
	local i w cmd=
	for ((i = 1; i < cword; i++)); do
		w=${words[i]}
		case $w in
		--)
			_{{.Name}}_child $((i + 1))
			return
			;;
		-*=*) ;;
		-*) _{{.Name}}_takes_value "$cmd" "$w" && i=$((i + 1)) ;;
		*)
			if [[ -z $cmd ]]; then
				case $w in
				{{join (names .Commands) " | "}}) cmd=$w ;;
				*)
					_{{.Name}}_child "$i"
					return
					;;
				esac
			fi
			;;
		esac
	done
	if $split || { ((cword > 1)) && [[ $prev == -* ]] && _{{.Name}}_takes_value "$cmd" "$prev"; }; then
		_{{.Name}}_value "$prev"
		return
	fi
	local opts
	case $cmd in
	'') opts='{{join (spellings .Options) " "}}' ;;
{{- range .Commands}}
	{{.Name}}) opts='{{join (spellings .Options) " "}}' ;;{{end}}
	esac
	if [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
		return
	fi
	case $cmd in
	'') mapfile -t COMPREPLY < <(compgen -W '{{join (names .Commands) " "}}' -- "$cur") ;;
{{- range .Commands}}{{if .Words}}
	{{.Name}}) mapfile -t COMPREPLY < <(compgen -W '{{join .Words " "}}' -- "$cur") ;;{{end}}{{end}}
	esac
}

complete -F _{{.Name}} {{.Name}}
{{end}}`

// The zsh script is _arguments: the run's flags, then either one of
// guardrun's commands with its own flags or, as nice(1)'s completion does,
// the command to run and its arguments through _normal.
const zshTemplate = `{{define "zsh"}}#compdef {{.Name}}
# zsh completion for {{.Name}}(1), written by ` + "`{{.Name}} completion zsh`" + ` from its flags.

_{{.Name}}_commands() {
	local -a cmds=(
{{- range .Commands}}
		{{zshq (printf "%s:%s" .Name (zshdesc .Usage))}}{{end}}
	)
	_describe -t {{.Name}}-commands '{{.Name}} command' cmds
}

_{{.Name}}() {
	local curcontext=$curcontext state state_descr line ret=1
	typeset -A opt_args
	_arguments -C -S : \
{{- range .Options}}
		{{zshopt .}} \{{end}}
		'(-)1: :->first' \
		'(-)*:: :->rest' && ret=0
	case $state in
	first)
		_alternative \
			'{{.Name}}-commands:{{.Name}} command:_{{.Name}}_commands' \
			'commands:command to run:_command_names -e' && ret=0
		;;
	rest)
		case $words[1] in
{{- range .Commands}}
		{{.Name}})
			_arguments -S : \
{{- range .Options}}
				{{zshopt .}} \{{end}}
{{- if .Words}}
				'1:{{.Args}}:({{join .Words " "}})' \{{else if .Args}}
				'1::{{.Args}}: ' \{{end}}
				&& ret=0
			;;{{end}}
		*) _normal && ret=0 ;;
		esac
		;;
	esac
	return ret
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
	_{{.Name}} "$@"
else
	compdef _{{.Name}} {{.Name}}
fi
{{end}}`

// The fish script: a run's flags until a command or "--", each command's
// own after it, and after "--" the child's command line as fish would
// complete it on its own.
const fishTemplate = `{{define "fish"}}# fish completion for {{.Name}}(1), written by ` + "`{{.Name}} completion fish`" + ` from its flags.

# __fish_{{.Name}}_child: the child's command line, after --, as typed.
function __fish_{{.Name}}_child
	set -l tokens (commandline -opc)
	set -l i (contains -i -- -- $tokens); or return 1
	set -e tokens[1..$i]
	string join -- ' ' (string escape -- $tokens) (commandline -ct)
end

# __fish_{{.Name}}_run: no command and no -- yet.
function __fish_{{.Name}}_run
	not __fish_seen_subcommand_from {{join (names .Commands) " "}}; and not contains -- -- (commandline -opc)
end

# __fish_{{.Name}}_in COMMAND: COMMAND, and no -- yet.
function __fish_{{.Name}}_in
	__fish_seen_subcommand_from $argv; and not contains -- -- (commandline -opc)
end

complete -c {{.Name}} -f
complete -c {{.Name}} -n 'contains -- -- (commandline -opc)' -x -a '(complete -C (__fish_{{.Name}}_child))'
{{- $n := .Name}}
{{- range .Options}}
{{template "fishopt" (dict "n" $n "cond" (printf "__fish_%s_run" $n) "o" .)}}{{end}}
{{- range .Commands}}
complete -c {{$n}} -n '__fish_{{$n}}_run' -a {{.Name}} -d {{fishq .Usage}}
{{- $c := .Name}}{{range .Options}}
{{template "fishopt" (dict "n" $n "cond" (printf "__fish_%s_in %s" $n $c) "o" .)}}{{end}}
{{- if .Words}}
complete -c {{$n}} -n '__fish_{{$n}}_in {{.Name}}' -a '{{join .Words " "}}'{{end}}{{end}}
{{end}}
{{define "fishopt"}}complete -c {{.n}} -n '{{.cond}}'{{range .o.Names}}{{if eq (len .) 2}} -s {{slice . 1}}{{else}} -l {{slice . 2}}{{end}}{{end}}
{{- if .o.Arg}}{{if eq .o.Kind "file"}} -r -F{{else if eq .o.Kind "dir"}} -x -a '(__fish_complete_directories)'{{else if eq .o.Kind "user"}} -x -a '(__fish_complete_users)'{{else if eq .o.Kind "cmd"}} -x -a '(__fish_complete_command)'{{else if eq .o.Kind "words"}} -x -a '{{join .o.Words " "}}'{{else}} -x{{end}}{{end}} -d {{fishq .o.Short}}{{end}}`
