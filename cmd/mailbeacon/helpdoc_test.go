package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite deploy/man and deploy/completion from the help")

// generatedDocs are the committed files made from the help, and the
// commands that print them.
var generatedDocs = []struct {
	file string
	args []string
}{
	{"../../deploy/man/mailbeacon.1", []string{"help", "--man"}},
	{"../../deploy/completion/mailbeacon.bash", []string{"completion", "bash"}},
	{"../../deploy/completion/_mailbeacon", []string{"completion", "zsh"}},
}

func runOut(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("%q: exit %d: %s", args, code, errOut.String())
	}
	return out.String()
}

// The man page and completions in deploy/ are what the binary prints:
// a help text changed without regenerating them fails here.
func TestGeneratedDocsMatchHelp(t *testing.T) {
	for _, g := range generatedDocs {
		want := runOut(t, g.args...)
		if *updateDocs {
			if err := os.MkdirAll(filepath.Dir(g.file), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, g.file, want)
		}
		got, err := os.ReadFile(g.file)
		if err != nil || string(got) != want {
			t.Errorf("%s differs from `mailbeacon %s` (%v): run go test ./cmd/mailbeacon -run TestGeneratedDocsMatchHelp -update-docs", g.file, strings.Join(g.args, " "), err)
		}
	}
	// The package's man page is gzipped (Debian policy): the same text.
	const gz = "../../deploy/man/mailbeacon.1.gz"
	man := runOut(t, "help", "--man")
	if *updateDocs {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression) // no name, no time: reproducible
		zw.Write([]byte(man))
		zw.Close()
		if err := os.WriteFile(gz, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(gz)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil || string(got) != man || zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("%s is not the gzipped man page without name and time (%v): run with -update-docs", gz, err)
	}
}

// helpFlags reads the flags a command's --help lists, the way a reader
// sees them (flag.PrintDefaults' "  -name" lines).
func helpFlags(t *testing.T, path ...string) []string {
	t.Helper()
	var out bytes.Buffer
	run(context.Background(), append(path, "--help"), &out, &out)
	if !strings.HasPrefix(out.String(), "Usage: mailbeacon "+strings.Join(path, " ")) {
		return nil // no --help of its own (version, help)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  -([-a-z]+)`).FindAllStringSubmatch(out.String(), -1) {
		flags = append(flags, "--"+m[1])
	}
	return flags
}

// commandPaths are the commands the top-level usage lists.
func commandPaths(t *testing.T) [][]string {
	t.Helper()
	var out [][]string
	for _, m := range regexp.MustCompile(`(?m)^  mailbeacon (.*)$`).FindAllStringSubmatch(usage, -1) {
		var path []string
		for _, w := range strings.Fields(m[1]) {
			if !regexp.MustCompile(`^[a-z]+$`).MatchString(w) {
				break
			}
			path = append(path, w)
		}
		out = append(out, path)
	}
	if len(out) < 7 {
		t.Fatalf("usage lists %d commands", len(out))
	}
	return out
}

// man -l renders the page without a warning, with every command, every
// flag its --help lists, and the sections an operator looks for.
func TestManPageRendersWithoutWarnings(t *testing.T) {
	needTool(t, "man")
	needTool(t, "groff")
	file := filepath.Join(t.TempDir(), "mailbeacon.1")
	writeFile(t, file, runOut(t, "help", "--man"))
	var stderr bytes.Buffer
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", file)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("groff -ww: %v\n%s", err, stderr.String())
	}
	stderr.Reset()
	cmd = exec.Command("man", "-l", "--warnings", file)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_KEEP_FORMATTING=", "PAGER=cat", "MANPAGER=cat")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("man -l --warnings: %v\n%s", err, stderr.String())
	}
	text := string(out)
	for _, s := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "ENVIRONMENT", "FILES", "EXIT STATUS",
		"MAILBEACON_<SECTION>_<KEY>", "/etc/mailbeacon/ldap-password", "78 (EX_CONFIG)"} {
		if !strings.Contains(text, s) {
			t.Errorf("the rendered page has no %q", s)
		}
	}
	for _, path := range commandPaths(t) {
		name := strings.Join(path, " ")
		_, section, ok := strings.Cut(text, "\n   "+name+"\n")
		if !ok {
			t.Errorf("no section for %q", name)
			continue
		}
		// The section ends at the next subsection or section heading.
		if end := regexp.MustCompile(`\n {0,3}[a-zA-Z]`).FindStringIndex(section); end != nil {
			section = section[:end[0]]
		}
		for _, f := range helpFlags(t, path...) {
			// Each flag is an item of its command's section.
			if !regexp.MustCompile(`(?m)^ {7}` + f + `( |$)`).MatchString(section) {
				t.Errorf("%s: flag %s is not an item of its section:\n%s", name, f, section)
			}
		}
	}
}

// bashComplete runs the completion function on a command line (the last
// word being completed) in a real bash and returns its candidates.
func bashComplete(t *testing.T, script, line string) []string {
	t.Helper()
	words := strings.Split(line, " ")
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + w + "'"
	}
	prog := "source " + script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" +
		strconv.Itoa(len(words)-1) + "\n_mailbeacon\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	cmd := exec.Command("bash", "--norc", "--noprofile", "-c", prog)
	cmd.Dir = t.TempDir() // file completion finds nothing here
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v: %s", err, out)
	}
	return strings.Fields(string(out))
}

// The bash completion offers every command, every flag each command's
// --help lists, and the fixed words (bash|zsh).
func TestBashCompletionOffersEveryCommandAndFlag(t *testing.T) {
	needTool(t, "bash")
	script := filepath.Join(t.TempDir(), "mailbeacon.bash")
	writeFile(t, script, runOut(t, "completion", "bash"))
	has := func(line string, want ...string) {
		t.Helper()
		got := bashComplete(t, script, line)
		for _, w := range want {
			if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
				t.Errorf("%q completes to %q, without %q", line, got, w)
			}
		}
	}
	for _, path := range commandPaths(t) {
		has("mailbeacon "+path[0][:1], path[0])
		if len(path) > 1 {
			has("mailbeacon "+path[0]+" ", path[1])
		}
		if flags := helpFlags(t, path...); len(flags) > 0 {
			has("mailbeacon "+strings.Join(path, " ")+" --", flags...)
		}
	}
	has("mailbeacon completion ", "bash", "zsh")
	has("mailbeacon help --", "--man")
	has("mailbeacon config check --s", "--strict")
	if got := bashComplete(t, script, "mailbeacon serve --listen "); len(got) != 0 {
		t.Errorf("a value flag completes to %q", got)
	}
}

// The zsh completion parses (zsh -n) and names every command and flag.
func TestZshCompletionNamesEveryCommandAndFlag(t *testing.T) {
	needTool(t, "zsh")
	script := filepath.Join(t.TempDir(), "_mailbeacon")
	text := runOut(t, "completion", "zsh")
	writeFile(t, script, text)
	if out, err := exec.Command("zsh", "-n", script).CombinedOutput(); err != nil {
		t.Errorf("zsh -n: %v: %s", err, out)
	}
	if !strings.HasPrefix(text, "#compdef mailbeacon\n") {
		t.Errorf("no #compdef line")
	}
	for _, path := range commandPaths(t) {
		if !strings.Contains(text, "'"+path[len(path)-1]+":") {
			t.Errorf("command %q is not described", strings.Join(path, " "))
		}
		for _, f := range helpFlags(t, path...) {
			if !strings.Contains(text, "'"+f+"[") && !strings.Contains(text, "'"+f+"=[") {
				t.Errorf("%s: flag %s is not in the zsh completion", strings.Join(path, " "), f)
			}
		}
	}
}

// zshCompleteScript types "mailbeacon WORDS<TAB>" into an interactive zsh
// (on a pseudo-terminal, with compinit and the completion on $fpath) and
// prints the screen once it shows $2, or after 10 seconds.
const zshCompleteScript = `zmodload zsh/zpty
zpty z 'zsh -f -i'
# wait SHOWN: read the terminal until it shows SHOWN (10 s at most).
wait() {
	integer i
	for ((i = 0; i < 100; i++)); do
		while zpty -r -t z chunk; do all+=$chunk; done
		[[ $all == *"$1"* ]] && return
		sleep 0.1
	done
}
local all= chunk
zpty -w z "PS1='%%%% '; fpath=($0 \$fpath); autoload -Uz compinit; compinit -u -D; mailbeacon() { :; }; LISTMAX=1000; echo ready''y"
wait readyy
wait '%% '
all=
zpty -w -n z "mailbeacon $1"$'\t'
wait "$2"
print -r -- "$all"
zpty -d z
`

// In a real zsh, the completion lists each command's flags and the fixed
// words, from the committed file.
func TestZshCompletionCompletesInZsh(t *testing.T) {
	needTool(t, "zsh")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "_mailbeacon"), runOut(t, "completion", "zsh"))
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"config check --", []string{"--online", "--strict"}},
		{"serve --", helpFlags(t, "serve")},
		{"completion ", []string{"bash", "zsh"}},
		{"con", []string{"config"}},
	} {
		last := tc.want[len(tc.want)-1]
		out, err := exec.Command("zsh", "-f", "-c", zshCompleteScript, dir, tc.line, last).CombinedOutput()
		if err != nil {
			t.Fatalf("zsh: %v: %s", err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%q: zsh offers no %q:\n%s", tc.line, w, out)
			}
		}
	}
}
