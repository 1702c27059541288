package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// completionCmd prints the bash or zsh completion script, made from the
// commands and flags the help lists (helpdoc.go).
func completionCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("completion", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: mailbeacon completion bash|zsh\n\n"+
			"Print the shell completion script for bash or zsh. The Debian package installs\n"+
			"them; otherwise, e.g.: mailbeacon completion bash > /etc/bash_completion.d/mailbeacon\n")
	}
	shell, err := oneArgument(fs, args, stderr)
	if err != nil {
		return err
	}
	d := readHelp(ctx)
	switch shell {
	case "bash":
		d.writeBash(stdout)
	case "zsh":
		d.writeZsh(stdout)
	default:
		fmt.Fprintf(stderr, "completion: %q is not bash or zsh\n", shell)
		return errUsage
	}
	return nil
}

// helpMan prints the man page: `mailbeacon help --man`.
func helpMan(ctx context.Context, stdout io.Writer) {
	readHelp(ctx).writeMan(stdout)
}

// paths returns every command path and every prefix of one ("config"
// for "config check"), sorted.
// pathPattern is the shell case pattern matching every command path,
// each quoted: "config" | "config check" | ...
func (d helpDoc) pathPattern() string {
	var quoted []string
	for _, path := range d.paths() {
		quoted = append(quoted, fmt.Sprintf("%q", path))
	}
	return strings.Join(quoted, " | ")
}

func (d helpDoc) paths() []string {
	seen := map[string]bool{}
	for _, c := range d.commands {
		words := strings.Fields(c.path)
		for i := range words {
			seen[strings.Join(words[:i+1], " ")] = true
		}
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// children returns the words that may follow path ("" for the first).
func (d helpDoc) children(path string) []string {
	var out []string
	for _, p := range d.paths() {
		rest, ok := strings.CutPrefix(p, path)
		if path != "" {
			rest, ok = strings.CutPrefix(rest, " ")
		}
		if ok && rest != "" && !strings.Contains(rest, " ") {
			out = append(out, rest)
		}
	}
	return out
}

var wordChoiceRE = regexp.MustCompile(`^[a-z]+(\|[a-z]+)+$`)

// fileArg tells whether a flag's value is a file name.
func fileArg(f flagDoc) bool { return f.arg == "file" }

// positionalWords are the fixed words a command takes as its argument
// (completion's bash|zsh), from its synopsis.
func positionalWords(c commandDoc) []string {
	for _, w := range strings.Fields(c.synopsis) {
		if wordChoiceRE.MatchString(w) {
			return strings.Split(w, "|")
		}
	}
	return nil
}

func (d helpDoc) writeBash(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("# bash completion for mailbeacon. Generated from its help: mailbeacon completion bash")
	p("_mailbeacon() {")
	p("\tlocal cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmdpath= i")
	p("\t# The command: the leading words that name one.")
	p("\tfor ((i = 1; i < COMP_CWORD; i++)); do")
	p("\t\tcase \"$cmdpath${cmdpath:+ }${COMP_WORDS[i]}\" in")
	p("\t\t%s) cmdpath=\"$cmdpath${cmdpath:+ }${COMP_WORDS[i]}\" ;;", d.pathPattern())
	p("\t\t*) break ;;")
	p("\t\tesac")
	p("\tdone")
	p("\tlocal words= flags= files= values=")
	p("\tcase $cmdpath in")
	for _, path := range append([]string{""}, d.paths()...) {
		words := d.children(path)
		var flags, files, values []string
		for _, c := range d.commands {
			if c.path != path {
				continue
			}
			words = append(words, positionalWords(c)...)
			for _, f := range c.flags {
				flags = append(flags, "--"+f.name)
				switch {
				case fileArg(f):
					files = append(files, "--"+f.name)
				case f.arg != "":
					values = append(values, "--"+f.name)
				}
			}
		}
		p("\t%q) words=%q flags=%q files=%q values=%q ;;", path, strings.Join(words, " "), strings.Join(flags, " "), strings.Join(files, " "), strings.Join(values, " "))
	}
	p("\tesac")
	p("\tif [[ \" $values \" == *\" $prev \"* ]]; then")
	p("\t\tCOMPREPLY=() # a value: nothing to offer")
	p("\telif [[ \" $files \" == *\" $prev \"* ]]; then")
	p("\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))")
	p("\telif [[ $cur == -* ]]; then")
	p("\t\tCOMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))")
	p("\telif [[ -n $words ]]; then")
	p("\t\tCOMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))")
	p("\telse")
	p("\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))")
	p("\tfi")
	p("}")
	p("complete -o filenames -F _mailbeacon mailbeacon")
}

// zshQuote quotes s for the shell, in single quotes.
func zshQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// zshDesc escapes the characters _arguments reads in an option's
// description.
func zshDesc(s string) string {
	return strings.NewReplacer(`\`, `\\`, "[", `\[`, "]", `\]`, ":", `\:`).Replace(s)
}

func (d helpDoc) writeZsh(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	summaries := map[string]string{}
	for _, c := range d.commands {
		summaries[c.path] = c.summary
	}
	p("#compdef mailbeacon")
	p("# zsh completion for mailbeacon. Generated from its help: mailbeacon completion zsh")
	p("_mailbeacon() {")
	p("\tlocal cmdpath= i n=0")
	p("\tlocal -a cmds")
	p("\tfor ((i = 2; i < CURRENT; i++)); do")
	p("\t\tcase \"$cmdpath${cmdpath:+ }${words[i]}\" in")
	p("\t\t%s) cmdpath=\"$cmdpath${cmdpath:+ }${words[i]}\" n=$((n + 1)) ;;", d.pathPattern())
	p("\t\t*) break ;;")
	p("\t\tesac")
	p("\tdone")
	p("\t# What follows the command, as _arguments expects it.")
	p("\twords=(\"${words[1]}\" \"${(@)words[n+2,-1]}\")")
	p("\t(( CURRENT -= n ))")
	p("\tcase $cmdpath in")
	for _, path := range append([]string{""}, d.paths()...) {
		children := d.children(path)
		var cmd *commandDoc
		for i := range d.commands {
			if d.commands[i].path == path {
				cmd = &d.commands[i]
			}
		}
		p("\t%q)", path)
		if len(children) > 0 {
			var specs []string
			for _, c := range children {
				full := strings.TrimSpace(path + " " + c)
				summary := summaries[full]
				if summary == "" { // a group ("config"): what its commands do
					var subs []string
					for _, sub := range d.children(full) {
						subs = append(subs, sub+": "+summaries[full+" "+sub])
					}
					summary = strings.Join(subs, "; ")
				}
				specs = append(specs, zshQuote(c+":"+summary))
			}
			p("\t\tcmds=(%s)", strings.Join(specs, " "))
			p("\t\t_describe -t commands 'mailbeacon command' cmds")
			p("\t\t;;")
			continue
		}
		specs := []string{"-s", ":"}
		if cmd != nil {
			for _, f := range cmd.flags {
				switch {
				case fileArg(f):
					specs = append(specs, zshQuote("--"+f.name+"=["+zshDesc(f.usage)+"]:"+f.arg+":_files"))
				case f.arg != "":
					specs = append(specs, zshQuote("--"+f.name+"=["+zshDesc(f.usage)+"]:"+f.arg+": "))
				default:
					specs = append(specs, zshQuote("--"+f.name+"["+zshDesc(f.usage)+"]"))
				}
			}
			if words := positionalWords(*cmd); len(words) > 0 {
				specs = append(specs, zshQuote("1:shell:("+strings.Join(words, " ")+")"))
			} else {
				specs = append(specs, zshQuote("*:argument:_files"))
			}
		}
		p("\t\t_arguments %s", strings.Join(specs, " \\\n\t\t\t"))
		p("\t\t;;")
	}
	p("\tesac")
	p("}")
	p(`_mailbeacon "$@"`)
}
