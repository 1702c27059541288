package main

// The man page and the shell completions are made from the help the
// binary prints: the top-level usage and each command's --help (its
// usage, text and flag.PrintDefaults), so that they cannot say other
// than `mailbeacon COMMAND --help` does. deploy/man and deploy/completion
// hold them generated; a test fails when they drift.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// helpDoc is the help of the whole program.
type helpDoc struct {
	name     string // "mailbeacon"
	summary  string // the first line's text after "mailbeacon - "
	synopsis []string
	items    []helpItem // the Commands: list
	// sections are the top-level paragraphs by heading ("" for those
	// without one, "Exit status", "Files", ...), in order.
	sections []helpSection
	commands []commandDoc
}

type helpItem struct{ tag, text string }

type helpSection struct {
	heading string
	text    []string // lines, as printed (heading removed)
}

// commandDoc is one command's --help.
type commandDoc struct {
	path     string // "serve", "config check"
	summary  string // from the Commands: list
	synopsis string // "mailbeacon serve [--config FILE] ..."; "" without --help
	text     [][]string
	flags    []flagDoc
}

type flagDoc struct{ name, arg, usage string }

var (
	commandWordRE = regexp.MustCompile(`^[a-z]+$`)
	headingRE     = regexp.MustCompile(`^([A-Z][a-z]+(?: [a-z]+)?):(?: (.*))?$`)
	flagLineRE    = regexp.MustCompile(`^  -([A-Za-z0-9][-A-Za-z0-9_]*)(?: ([^\t]+))?(?:\t(.*))?$`)
	itemRE        = regexp.MustCompile(`^  ([a-z]+(?: [a-z]+)?)(?:  +(.*))?$`)
)

// readHelp runs the program's help commands in-process and parses what
// they print.
func readHelp(ctx context.Context) helpDoc {
	var d helpDoc
	paras := paragraphs(usage)
	head, _, _ := strings.Cut(paras[0][0], " - ")
	d.name, d.summary = head, strings.TrimPrefix(paras[0][0], head+" - ")
	for _, p := range paras[1:] {
		m := headingRE.FindStringSubmatch(p[0])
		switch {
		case m != nil && m[1] == "Usage":
			for _, l := range p[1:] {
				d.synopsis = append(d.synopsis, strings.TrimSpace(l))
			}
		case m != nil && m[1] == "Commands":
			d.items = commandItems(p[1:])
		case m != nil:
			text := p[1:]
			if m[2] != "" {
				text = append([]string{m[2]}, text...)
			}
			d.sections = append(d.sections, helpSection{m[1], text})
		default:
			d.sections = append(d.sections, helpSection{"", p})
		}
	}
	summaries := map[string]string{}
	for _, it := range d.items {
		summaries[it.tag] = it.text
	}
	for _, s := range d.synopsis {
		var words []string
		for _, w := range strings.Fields(s)[1:] {
			if !commandWordRE.MatchString(w) {
				break
			}
			words = append(words, w)
		}
		c := commandDoc{path: strings.Join(words, " "), summary: summaries[strings.Join(words, " ")]}
		if len(d.commands) > 0 && d.commands[len(d.commands)-1].path == c.path {
			continue
		}
		var out bytes.Buffer
		run(ctx, append(append([]string{}, words...), "--help"), &out, &out)
		c.parseHelp(out.String())
		if c.synopsis == "" {
			// No --help of its own (help, version): the flags its usage
			// line shows.
			for _, w := range strings.Fields(s) {
				if name, ok := strings.CutPrefix(strings.Trim(w, "[]"), "--"); ok {
					c.flags = append(c.flags, flagDoc{name: name})
				}
			}
		}
		d.commands = append(d.commands, c)
	}
	return d
}

// paragraphs splits text at blank lines.
func paragraphs(text string) [][]string {
	var out [][]string
	var cur []string
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if strings.TrimSpace(l) == "" {
			if cur != nil {
				out = append(out, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, strings.TrimRight(l, " "))
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out
}

// commandItems reads the Commands: list: "  name   text", continued on
// lines indented further.
func commandItems(lines []string) []helpItem {
	var out []helpItem
	for _, l := range lines {
		if m := itemRE.FindStringSubmatch(l); m != nil {
			out = append(out, helpItem{m[1], m[2]})
			continue
		}
		if n := len(out); n > 0 {
			out[n-1].text = strings.TrimSpace(out[n-1].text + " " + strings.TrimSpace(l))
		}
	}
	return out
}

// parseHelp reads a command's --help: "Usage: ..." first, then text,
// then flag.PrintDefaults' lines. Output that does not start with the
// command's usage (version prints the version) leaves c without one.
func (c *commandDoc) parseHelp(out string) {
	first, rest, _ := strings.Cut(out, "\n")
	syn, ok := strings.CutPrefix(first, "Usage: ")
	if !ok || !strings.HasPrefix(syn, "mailbeacon "+c.path) {
		return
	}
	c.synopsis = syn
	lines := strings.Split(rest, "\n")
	i := 0
	for ; i < len(lines) && flagLineRE.FindStringSubmatch(lines[i]) == nil; i++ {
	}
	c.text = paragraphs(strings.Join(lines[:i], "\n"))
	for ; i < len(lines); i++ {
		if m := flagLineRE.FindStringSubmatch(lines[i]); m != nil {
			c.flags = append(c.flags, flagDoc{name: m[1], arg: m[2], usage: m[3]})
			continue
		}
		if u, ok := strings.CutPrefix(lines[i], "    \t"); ok && len(c.flags) > 0 {
			f := &c.flags[len(c.flags)-1]
			f.usage = strings.TrimSpace(f.usage + " " + u)
		}
	}
}

// manSections maps the top-level headings to the man page's sections.
var manSections = map[string]string{
	"Configuration": "CONFIGURATION",
	"Environment":   "ENVIRONMENT",
	"Files":         "FILES",
	"Exit status":   "EXIT STATUS",
}

// writeMan writes d as a man page in man(7) macros.
func (d helpDoc) writeMan(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p(`.\" Generated from the help mailbeacon prints: mailbeacon help --man`)
	p(`.TH %s 1 "" "%s" "User Commands"`, strings.ToUpper(d.name), d.name)
	p(".nh") // no hyphenation: names and keys copy as printed
	p(".ad l")
	p(".SH NAME")
	p(`%s \- %s`, d.name, roffEscape(d.summary))
	p(".SH SYNOPSIS")
	for i, s := range d.synopsis {
		if i > 0 {
			p(".br")
		}
		p("%s", roffSynopsis(s))
	}
	p(".SH DESCRIPTION")
	for _, it := range d.items {
		p(".TP")
		p(`.B "%s"`, roffEscape(it.tag))
		p("%s", roffEscape(it.text))
	}
	for _, s := range d.sections {
		if s.heading == "" {
			writeRoffParagraph(w, s.text)
		}
	}
	p(".SH COMMANDS")
	for _, c := range d.commands {
		p(`.SS "%s"`, roffEscape(c.path))
		if c.synopsis != "" {
			p("%s", roffSynopsis(c.synopsis))
		}
		if c.summary != "" && len(c.text) == 0 {
			p(".PP")
			p("%s", roffEscape(strings.ToUpper(c.summary[:1])+c.summary[1:]+"."))
		}
		for _, t := range c.text {
			writeRoffParagraph(w, t)
		}
		for _, f := range c.flags {
			if f.usage == "" {
				continue // from the usage line only: the text above says it
			}
			p(".TP")
			if f.arg != "" {
				p(`.BI "\-\-%s " "%s"`, roffEscape(f.name), roffEscape(f.arg))
			} else {
				p(`.B \-\-%s`, roffEscape(f.name))
			}
			p("%s", roffEscape(f.usage))
		}
	}
	for _, heading := range []string{"Configuration", "Environment", "Files", "Exit status"} {
		for _, s := range d.sections {
			if s.heading == heading {
				p(".SH %s", manSections[heading])
				writeRoffParagraph(w, s.text)
			}
		}
	}
	p(".SH SEE ALSO")
	p("%s", roffEscape("/usr/share/doc/mailbeacon/README.md, /usr/share/doc/mailbeacon/examples/config.example.yaml, systemctl(1), journalctl(1)"))
}

// writeRoffParagraph writes lines as printed: filled text, and lines
// indented past the paragraph's first (examples) as they are.
func writeRoffParagraph(w io.Writer, lines []string) {
	indent := func(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }
	base := indent(lines[0])
	fmt.Fprintln(w, ".PP")
	verbatim := false
	for _, l := range lines {
		deeper := indent(l) > base
		switch {
		case deeper && !verbatim:
			fmt.Fprintln(w, ".RS 4\n.nf")
		case !deeper && verbatim:
			fmt.Fprintln(w, ".fi\n.RE")
		}
		verbatim = deeper
		if verbatim {
			fmt.Fprintln(w, roffEscape(strings.TrimLeft(l, " ")))
		} else {
			l = roffEscape(strings.TrimSpace(l))
			if strings.HasSuffix(l, "e.g.") || strings.HasSuffix(l, "i.e.") {
				l += `\&` // not the end of a sentence
			}
			fmt.Fprintln(w, l)
		}
	}
	if verbatim {
		fmt.Fprintln(w, ".fi\n.RE")
	}
}

// roffSynopsis sets a usage line: the command in bold, flags bold,
// placeholders (FILE, ADDR) in italics.
func roffSynopsis(s string) string {
	var b strings.Builder
	for i, word := range strings.Fields(s) {
		if i > 0 {
			b.WriteByte(' ')
		}
		// Brackets and bars stay roman around the word they enclose.
		core := strings.Trim(word, "[]|.")
		lead := word[:strings.Index(word, core)]
		tail := word[len(lead)+len(core):]
		b.WriteString(roffEscape(lead))
		switch {
		case core == "":
		case i == 0 || commandWordRE.MatchString(core) || strings.HasPrefix(core, "-"):
			b.WriteString(`\fB` + roffEscape(core) + `\fR`)
		default:
			b.WriteString(`\fI` + roffEscape(core) + `\fR`)
		}
		b.WriteString(roffEscape(tail))
	}
	out := b.String()
	if strings.HasPrefix(out, ".") || strings.HasPrefix(out, "'") {
		out = `\&` + out
	}
	return out
}

// roffEscape makes text safe for roff: backslashes and hyphens escaped
// (\- is the minus that copies as "-"), a leading control character
// neutralised, non-ASCII as \[uXXXX].
func roffEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r > 126:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	out := b.String()
	if strings.HasPrefix(out, ".") || strings.HasPrefix(out, "'") {
		out = `\&` + out
	}
	return out
}
