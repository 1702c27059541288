package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// zoneRecords parses zone-file text with miekg/dns and returns its records
// as "name TYPE rdata" strings, sorted.
func zoneRecords(t *testing.T, zone string) []string {
	t.Helper()
	zp := dns.NewZoneParser(strings.NewReader(zone), "", "")
	var out []string
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		h := rr.Header()
		if h.Class != dns.ClassINET || h.Ttl == 0 {
			t.Errorf("record %s: class %d, TTL %d", rr, h.Class, h.Ttl)
		}
		rdata := strings.TrimPrefix(rr.String(), h.String())
		out = append(out, h.Name+" "+dns.TypeToString[h.Rrtype]+" "+rdata)
	}
	if err := zp.Err(); err != nil {
		t.Fatalf("zone does not parse: %v\n%s", err, zone)
	}
	slices.Sort(out)
	return out
}

func runDNS(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"dns"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// `mailbeacon dns example.com --demo` prints a zone snippet that a zone
// parser accepts and that matches the demo's services (cmd/mailbeacon/demo.yaml).
func TestDNSDemoZone(t *testing.T) {
	code, out, errOut := runDNS(t, "example.com", "--demo")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := []string{
		"_autodiscover._tcp.example.com. SRV 0 0 443 mailbeacon.example.net.",
		"_caldav._tcp.example.com. SRV 0 0 0 .",
		"_caldavs._tcp.example.com. SRV 0 0 0 .",
		"_carddav._tcp.example.com. SRV 0 0 0 .",
		"_carddavs._tcp.example.com. SRV 0 0 0 .",
		"_imap._tcp.example.com. SRV 0 0 0 .",                    // IMAP only with implicit TLS
		"_imaps._tcp.example.com. SRV 0 1 993 mail.example.com.", // preferred: listed first
		"_pop3._tcp.example.com. SRV 0 0 0 .",
		"_pop3s._tcp.example.com. SRV 20 1 995 mail.example.com.",      // after IMAP
		"_submission._tcp.example.com. SRV 10 1 587 mail.example.com.", // STARTTLS after implicit TLS
		"_submissions._tcp.example.com. SRV 0 1 465 mail.example.com.",
		"autoconfig.example.com. CNAME mailbeacon.example.net.",
		"autodiscover.example.com. CNAME mailbeacon.example.net.",
		"ua-auto-config.example.com. CNAME mailbeacon.example.net.",
	}
	// The PACC TXT record's hash is checked against the served body by
	// TestDNSPACCRecordMatchesServedBody.
	got := slices.DeleteFunc(zoneRecords(t, out), func(r string) bool {
		return strings.HasPrefix(r, `_ua-auto-config.example.com. TXT "v=UAAC1; a=sha256; d=`)
	})
	if !slices.Equal(got, want) {
		t.Errorf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The _ua-auto-config TXT record `mailbeacon dns example.com --demo`
// prints carries the SHA-256 of exactly the body the demo serves on
// ua-auto-config.example.com: recomputed here from the bytes on the wire.
func TestDNSPACCRecordMatchesServedBody(t *testing.T) {
	code, out, errOut := runDNS(t, "example.com", "--demo")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var txt []string
	for _, r := range zoneRecords(t, out) {
		if v, ok := strings.CutPrefix(r, "_ua-auto-config.example.com. TXT "); ok {
			txt = append(txt, v)
		}
	}
	h, _ := demoApp(t, demoConfig)
	req := httptest.NewRequest(http.MethodGet, "https://ua-auto-config.example.com/.well-known/user-agent-configuration.json", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("served %d %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	sum := sha256.Sum256(rec.Body.Bytes())
	want := strconv.Quote("v=UAAC1; a=sha256; d=" + base64.StdEncoding.EncodeToString(sum[:]))
	if len(txt) != 1 || txt[0] != want {
		t.Errorf("dns prints %v, the served body needs %s", txt, want)
	}
}

func TestDNSVariants(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "dav.yaml")
	conf := `
server:
  public_addresses: [192.0.2.10, "2001:db8::10"]
domains:
  - name: Example.org
    autodiscover_url: https://ad.example.net/autodiscover/autodiscover.xml
    services:
      - {type: pop3, host: pop.example.org, socket: tls}
      - {type: imap, host: imap.example.org, socket: starttls}
      - {type: imap, host: imap2.example.org, socket: starttls}
      - {type: smtp, host: smtp.example.org, socket: starttls}
      - {type: caldav, url: "https://dav.example.org/cal/"}
      - {type: carddav, url: "http://dav.example.org:8008/card"}
`
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		has  []string // records that must be there
		not  []string // record prefixes that must not
	}{
		{"addresses, DAV, POP3 first", []string{"--config", cfgFile, "example.org"}, []string{
			"autoconfig.example.org. A 192.0.2.10",
			"autoconfig.example.org. AAAA 2001:db8::10",
			"autodiscover.example.org. A 192.0.2.10",
			"ua-auto-config.example.org. AAAA 2001:db8::10",
			"_autodiscover._tcp.example.org. SRV 0 0 443 ad.example.net.", // autodiscover_url's host
			"_pop3s._tcp.example.org. SRV 0 1 995 pop.example.org.",
			"_imaps._tcp.example.org. SRV 0 0 0 .",
			"_imap._tcp.example.org. SRV 30 1 143 imap.example.org.", // second protocol, STARTTLS
			"_imap._tcp.example.org. SRV 31 1 143 imap2.example.org.",
			"_submissions._tcp.example.org. SRV 0 0 0 .",
			"_submission._tcp.example.org. SRV 10 1 587 smtp.example.org.",
			"_caldavs._tcp.example.org. SRV 0 1 443 dav.example.org.",
			`_caldavs._tcp.example.org. TXT "path=/cal/"`,
			"_caldav._tcp.example.org. SRV 0 0 0 .",
			"_carddav._tcp.example.org. SRV 0 1 8008 dav.example.org.",
			`_carddav._tcp.example.org. TXT "path=/card"`,
			"_carddavs._tcp.example.org. SRV 0 0 0 .",
		}, []string{"autoconfig.example.org. CNAME"}},
		{"--target wins over addresses", []string{"--config", cfgFile, "--target", "mb.example.net", "example.org"}, []string{
			"autoconfig.example.org. CNAME mb.example.net.",
		}, []string{"autoconfig.example.org. A "}},
		{"--address wins over the demo's host", []string{"example.com", "--demo", "--address", "198.51.100.1", "--ttl", "300"}, []string{
			"autoconfig.example.com. A 198.51.100.1",
			"_autodiscover._tcp.example.com. SRV 0 0 443 autodiscover.example.com.", // not an alias now
		}, []string{"autoconfig.example.com. CNAME"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runDNS(t, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			got := zoneRecords(t, out)
			for _, w := range tc.has {
				if !slices.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, strings.Join(got, "\n"))
				}
			}
			for _, n := range tc.not {
				for _, g := range got {
					if strings.HasPrefix(g, n) {
						t.Errorf("unexpected %q", g)
					}
				}
			}
		})
	}
}

func TestDNSErrors(t *testing.T) {
	noTarget := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(noTarget, []byte("domains:\n  - name: example.com\n    services: [{type: imap, host: mail.example.com}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		errHas string
	}{
		{"no domain", []string{"--demo"}, 2, "Usage: mailbeacon dns"},
		{"unknown domain", []string{"--demo", "example.org"}, 1, "example.org is not a configured domain (configured: example.com)"},
		{"no target", []string{"--config", noTarget, "example.com"}, 1, "give --target HOST"},
		{"bad address", []string{"--demo", "--address", "nope", "example.com"}, 2, `"nope" is not an IP address`},
		{"bad target", []string{"--demo", "--target", "-x", "example.com"}, 1, "--target"},
		{"no configuration", []string{"example.com"}, 1, "no configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runDNS(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.errHas) {
				t.Errorf("exit %d, stderr %q; want %d, %q", code, errOut, tc.code, tc.errHas)
			}
		})
	}
}
