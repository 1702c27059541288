package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validWith is testdata/configcheck/valid.yaml with policy.account_enabled
// set to rule and extra appended.
func validWith(t *testing.T, rule, extra string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/configcheck/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if rule != "" {
		text = strings.Replace(text, "policy:\n", "policy:\n  account_enabled: "+rule+"\n", 1)
	}
	return text + extra
}

// nots is a rule of n nested nots around {present: mail}.
func nots(n int) string {
	return strings.Repeat("{not: ", n) + "{present: mail}" + strings.Repeat("}", n)
}

// deepMap is a top-level key holding n nested maps.
func deepMap(key string, n int) string {
	return key + ": " + strings.Repeat("{a: ", n) + "1" + strings.Repeat("}", n) + "\n"
}

// checkTimed runs config check on text and returns its exit status,
// stderr and how long it took.
func checkTimed(t *testing.T, text string) (int, string, time.Duration) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, file, text)
	start := time.Now()
	code, _, errOut := runConfigCheck(t, file)
	return code, errOut, time.Since(start)
}

// TestConfigDepthRefusedFast: files past a bound are refused within a
// second (before: 23 s for the 2,000-deep map, 69 s for the rule), by an
// error naming the key path and the bound.
func TestConfigDepthRefusedFast(t *testing.T) {
	var wide strings.Builder
	wide.WriteString("wide: {")
	for i := range maxConfigMapKeys + 1 {
		fmt.Fprintf(&wide, "k%d: 1, ", i)
	}
	wide.WriteString("}\n")
	// Two maps of 200 keys 60 levels down: 2 × 200 × 60² steps.
	var deepWide strings.Builder
	deepWide.WriteString("deep: " + strings.Repeat("{a: ", 58) + "{")
	for m := range 2 {
		fmt.Fprintf(&deepWide, "m%d: {", m)
		for i := range 200 {
			fmt.Fprintf(&deepWide, "k%d: 1, ", i)
		}
		deepWide.WriteString("}, ")
	}
	deepWide.WriteString("}" + strings.Repeat("}", 58) + "\n")

	for _, tc := range []struct {
		name, text, want string
	}{
		{"2,000-deep map", validWith(t, "", deepMap("deep", 2000)), "deep.a×63: nested deeper than 64 levels"},
		{"2,000-deep not rule", validWith(t, nots(2000), ""), "policy.account_enabled.not×62: nested deeper than 64 levels"},
		{"2,000-deep list", validWith(t, "", "deep: "+strings.Repeat("[", 2000)+strings.Repeat("]", 2000)+"\n"), "deep[0]×63: nested deeper than 64 levels"},
		{"one level past the bound", validWith(t, nots(62), ""), "policy.account_enabled.not×62: nested deeper than 64 levels"},
		{"too many keys in one map", validWith(t, "", wide.String()), "wide: 257 keys in one map"},
		{"too many keys too deep", validWith(t, "", deepWide.String()), "deep.a×58.m1.k"},
		{"over 1 MiB", validWith(t, "", "#"+strings.Repeat("x", maxConfigBytes)+"\n"), "larger than 1048576 bytes (1 MiB)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, errOut, took := checkTimed(t, tc.text)
			t.Logf("%s (%d bytes): config check refused it in %v", tc.name, len(tc.text), took.Round(time.Microsecond))
			if code != exitConfigInvalid || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, want %d naming %q:\n%.500s", code, exitConfigInvalid, tc.want, errOut)
			}
			if took > time.Second {
				t.Errorf("refused after %v, want within a second", took)
			}
		})
	}
}

// TestConfigDepthAtBoundAccepted: a configuration exactly at each bound is
// valid. The time the check took is logged, not asserted: the decoder's
// step bound (configbounds.go) is what bounds the work, and a loaded
// machine running -race would fail any fixed time.
func TestConfigDepthAtBoundAccepted(t *testing.T) {
	// policy is level 2, account_enabled's rule level 3: 61 nots put
	// {present: mail} at level 64.
	atDepth := validWith(t, nots(61), "")
	// A file of exactly maxConfigBytes: the valid file and a comment.
	padded := validWith(t, "", "#")
	padded += strings.Repeat("x", maxConfigBytes-len(padded)-1) + "\n"
	var wide strings.Builder
	wide.WriteString("policy:\n  preset: iredmail\n  login: \"{uid}\"\n  services:\n")
	for _, k := range []string{"imap", "pop3", "smtp", "activesync"} {
		// Rules 60 levels deep under each kind.
		wide.WriteString("    " + k + ": " + nots(57) + "\n")
	}
	keys := strings.Replace(validWith(t, "", ""), "policy:\n  preset: iredmail\n  login: \"{uid}\"\n", wide.String(), 1)
	for _, tc := range []struct{ name, text string }{
		{"64 levels", atDepth},
		{"1 MiB", padded},
		{"four 60-deep service rules", keys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, errOut, took := checkTimed(t, tc.text)
			t.Logf("%s (%d bytes): config check accepted it in %v", tc.name, len(tc.text), took.Round(time.Microsecond))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
		})
	}
}

// TestConfigDepthReload: a SIGHUP with a 2,000-deep rule in the file is
// refused at once, naming the key, and the running configuration serves on.
func TestConfigDepthReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, file, demoConfig)
	s := startServe(t, []string{"--demo", "--config", file, "--listen", "127.0.0.1:0"})
	writeFile(t, file, strings.Replace(demoConfig, "policy:\n", "policy:\n  account_enabled: "+nots(2000)+"\n", 1))
	start := time.Now()
	s.hup()
	s.waitLog("configuration reload failed", 1)
	took := time.Since(start)
	t.Logf("reload of a 2,000-deep rule refused in %v", took.Round(time.Microsecond))
	if log := s.stderr.String(); !strings.Contains(log, "policy.account_enabled.not×62: nested deeper than 64 levels") {
		t.Errorf("the log does not name the key path:\n%s", log)
	}
	if took > time.Second {
		t.Errorf("refused after %v, want within a second", took)
	}
	code, body := get(t, http.DefaultClient, s.addrs["server.listen"]+"/mail/config-v1.1.xml?emailaddress=alice@example.com", "")
	if code != 200 || !strings.Contains(body, "<username>alice</username>") {
		t.Errorf("after the refused reload: %d %.300s", code, body)
	}
}

// TestConfigDepthWorstWithinBounds decodes the costliest files the bounds
// let through, for viper (keys nested in maps, up to the steps budget) and
// for the YAML decoder (1 MiB of maps of 250 keys), and prints how long
// each takes; they are not configurations, so decoding ends in an error
// about their keys, never in a bound.
func TestConfigDepthWorstWithinBounds(t *testing.T) {
	var deep, maps, lists strings.Builder
	// Two maps of 120 keys 61 levels down: 240 × 61² steps and the chain
	// above them, 966,000: just under 10⁶.
	deep.WriteString("deep: " + strings.Repeat("{a: ", 58) + "{")
	for m := range 2 {
		fmt.Fprintf(&deep, "m%d: {", m)
		for i := range 120 {
			fmt.Fprintf(&deep, "k%d: 1, ", i)
		}
		deep.WriteString("}, ")
	}
	deep.WriteString("}" + strings.Repeat("}", 58) + "\n")
	// 250 maps of 250 keys, 3 levels down: 62,500 × 9 steps.
	maps.WriteString("maps: {")
	for m := range 250 {
		fmt.Fprintf(&maps, "m%d: {", m)
		for i := range 250 {
			fmt.Fprintf(&maps, "k%d: 1, ", i)
		}
		maps.WriteString("}, ")
	}
	maps.WriteString("}\n")
	// 1 MiB of maps of 250 keys in a list: viper does not flatten lists.
	lists.WriteString("lists: [")
	for lists.Len() < maxConfigBytes-3000 {
		lists.WriteString("{")
		for i := 0; i < 250 && lists.Len() < maxConfigBytes-3000; i++ {
			fmt.Fprintf(&lists, "k%d: 1, ", i)
		}
		lists.WriteString("}, ")
	}
	lists.WriteString("]\n")
	for _, text := range []string{deep.String(), maps.String(), lists.String()} {
		name := text[:strings.IndexByte(text, ':')]
		start := time.Now()
		_, err := loadConfig(strings.NewReader(text), name)
		took := time.Since(start)
		t.Logf("%s (%d bytes): decoded in %v", name, len(text), took.Round(time.Millisecond))
		if err == nil || !strings.Contains(err.Error(), name+": unknown key") {
			t.Errorf("%s: %v, want an error about its keys, past every bound", name, err)
		}
	}
}
