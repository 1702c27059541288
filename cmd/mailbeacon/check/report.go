package check

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Status is the outcome of one check.
type Status string

const (
	OK   Status = "ok"   // as it should be
	Fail Status = "fail" // a client will fail or misbehave: fix it
	Warn Status = "warn" // works, but worth a look
	Skip Status = "skip" // not available, and clients move on: nothing to do
)

var symbols = map[Status]string{OK: "✔", Fail: "✘", Warn: "!", Skip: "-"}

// Result is one check: one line of the report.
type Result struct {
	Section string `json:"section"`
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Detail  string `json:"detail,omitempty"`
	// Fix says what to change when the status is fail or warn.
	Fix string `json:"fix,omitempty"`
}

// Report is what a check found.
type Report struct {
	Address string   `json:"address"`
	Domain  string   `json:"domain"`
	Results []Result `json:"results"`
	Passed  int      `json:"passed"`
	Failed  int      `json:"failed"`
	Warned  int      `json:"warnings"`
	Skipped int      `json:"skipped"`
}

// OK reports whether no check failed.
func (r *Report) OK() bool { return r.Failed == 0 }

func (r *Report) add(res Result) {
	r.Results = append(r.Results, res)
	switch res.Status {
	case OK:
		r.Passed++
	case Fail:
		r.Failed++
	case Warn:
		r.Warned++
	case Skip:
		r.Skipped++
	}
}

// Find returns the results whose check name contains s, for tests and
// tools.
func (r *Report) Find(section, s string) []Result {
	var out []Result
	for _, res := range r.Results {
		if (section == "" || res.Section == section) && strings.Contains(res.Check, s) {
			out = append(out, res)
		}
	}
	return out
}

// WriteText writes the readable report: one line per check, the fix
// indented below each failure and warning.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "mailbeacon check %s (domain %s)\n", r.Address, r.Domain)
	section := ""
	for _, res := range r.Results {
		if res.Section != section {
			section = res.Section
			fmt.Fprintf(&b, "\n%s\n", section)
		}
		line := "  " + symbols[res.Status] + " " + res.Check
		if res.Detail != "" {
			line += ": " + res.Detail
		}
		b.WriteString(line + "\n")
		if res.Fix != "" && (res.Status == Fail || res.Status == Warn) {
			for i, l := range strings.Split(res.Fix, "\n") {
				prefix := "      fix: "
				if i > 0 {
					prefix = "           "
				}
				b.WriteString(prefix + l + "\n")
			}
		}
	}
	fmt.Fprintf(&b, "\n%d checks: %d passed, %d failed, %d warnings, %d skipped\n",
		len(r.Results), r.Passed, r.Failed, r.Warned, r.Skipped)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}
