package protocols

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
)

func TestPACCGolden(t *testing.T) {
	ds, err := policy.NewDomains(draftDomains())
	if err != nil {
		t.Fatal(err)
	}
	body, ok, err := RenderPACC(ds["example.com"])
	if err != nil || !ok {
		t.Fatalf("RenderPACC: %v %v", ok, err)
	}
	golden(t, "pacc/example.com.json", body)
}

// The served body is exactly what the TXT record's hash pins: the test
// recomputes the SHA-256 from the bytes on the wire.
func TestPACCServedBodyMatchesRecord(t *testing.T) {
	h := NewHandler(newDraftResolver(t), Options{})
	rec := get(t, h, http.MethodGet, "ua-auto-config.example.com", PACCPath)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	sum := sha256.Sum256(rec.Body.Bytes())
	want := "v=UAAC1; a=sha256; d=" + base64.StdEncoding.EncodeToString(sum[:])
	ds, _ := policy.NewDomains(draftDomains())
	body, _, _ := RenderPACC(ds["example.com"])
	if got := PACCRecord(body); got != want {
		t.Errorf("record %q, but the served body hashes to %q", got, want)
	}
	// Per domain, never per user or per request: the same bytes again,
	// from a fresh configuration, after user lookups.
	get(t, h, http.MethodGet, "", "/mail/config-v1.1.xml?emailaddress=alice@example.com")
	if again := get(t, h, http.MethodGet, "ua-auto-config.example.com:443", PACCPath); !bytes.Equal(again.Body.Bytes(), rec.Body.Bytes()) {
		t.Errorf("bytes changed between requests:\n%s\n%s", rec.Body, again.Body)
	}
}

// What the document holds, read as a PACC client reads it.
func TestPACCDocument(t *testing.T) {
	ds, err := policy.NewDomains(draftDomains())
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := RenderPACC(ds["example.com"])
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Protocols map[string]map[string]any `json:"protocols"`
		Auth      struct {
			OAuth    *struct{ Issuer string } `json:"oauth-public"`
			Password *bool                    `json:"password"`
		} `json:"authentication"`
		Info struct {
			Provider struct{ Name, ShortName string }
			Help     struct{ Documentation string }
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	// Implicit TLS on the standard ports only: the 587 STARTTLS submission
	// is not expressible and not listed; ActiveSync and EWS have no member.
	want := map[string]string{"imap": "mail.example.com", "pop3": "mail.example.com", "smtp": "mail.example.com"}
	if len(doc.Protocols) != len(want) {
		t.Errorf("protocols %v", doc.Protocols)
	}
	for k, host := range want {
		if p := doc.Protocols[k]; len(p) != 1 || p["host"] != host {
			t.Errorf("%s: %v, want only host %s", k, p, host)
		}
	}
	if doc.Auth.OAuth == nil || doc.Auth.OAuth.Issuer != "https://login.example.com/" || doc.Auth.Password == nil || !*doc.Auth.Password {
		t.Errorf("authentication %+v", doc.Auth)
	}
	if doc.Info.Provider.Name != "Example Mail" || doc.Info.Provider.ShortName != "Example" || doc.Info.Help.Documentation != "https://help.example.com/mail" {
		t.Errorf("info %+v", doc.Info)
	}
}

func TestPACCHTTP(t *testing.T) {
	domains := append(demoDomains(), policy.DomainConfig{Name: "starttls.example", Services: []policy.ServiceConfig{
		{Type: "imap", Host: "mail.starttls.example", Port: 143, Socket: "starttls"},
		{Type: "smtp", Host: "mail.starttls.example", Port: 587, Socket: "starttls"},
	}})
	res, dir := newDemoResolver(t, domains)
	h := NewHandler(res, Options{})
	for _, tc := range []struct {
		name, method, host string
		status             int
		bodyHas            string
	}{
		{"served", "GET", "ua-auto-config.example.com", 200, `"imap": {`},
		{"upper case host", "GET", "UA-AUTO-CONFIG.Example.COM", 200, `"imap": {`},
		{"head", "HEAD", "ua-auto-config.example.com", 200, ""},
		{"unknown domain", "GET", "ua-auto-config.unknown.org", 404, "domain not served here"},
		{"by IP", "GET", "127.0.0.1:8080", 404, "domain not served here"},
		{"nothing PACC can say", "GET", "ua-auto-config.starttls.example", 404, "no PACC configuration"},
		{"POST", "POST", "ua-auto-config.example.com", 405, "method not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, h, tc.method, tc.host, PACCPath)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.bodyHas) {
				t.Errorf("got %d %q, want %d with %q", rec.Code, rec.Body, tc.status, tc.bodyHas)
			}
			if tc.method == "HEAD" && (rec.Body.Len() != 0 || rec.Header().Get("Content-Length") == "0") {
				t.Errorf("HEAD: body %d bytes, Content-Length %q", rec.Body.Len(), rec.Header().Get("Content-Length"))
			}
		})
	}
	if n := dir.searches.Load(); n != 0 {
		t.Errorf("the per-domain document made %d directory searches", n)
	}
}

func TestPACCRenderLimits(t *testing.T) {
	ds, err := policy.NewDomains([]policy.DomainConfig{{
		Name: "a.example", Provider: strings.Repeat("Ä", 70), ShortName: strings.Repeat("b", 30),
		Services: []policy.ServiceConfig{
			{Type: "imap", Host: "imap.a.example", Port: 1993, Socket: "tls"}, // not the standard port
			{Type: "imap", Host: "imap2.a.example", Port: 993, Socket: "tls"},
			{Type: "smtp", Host: "smtp.a.example", Port: 465, Socket: "tls", Auth: []string{"OAuth2"}},
			{Type: "caldav", URL: "https://dav.a.example:8443/cal/"}, // not port 443
			{Type: "carddav", URL: "https://dav.a.example/card/"},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	body, ok, err := RenderPACC(ds["a.example"])
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	s := string(body)
	for _, want := range []string{`"host": "imap2.a.example"`, `"carddav": {`, `"name": "` + strings.Repeat("Ä", 60) + `"`, `"shortName": "` + strings.Repeat("b", 20) + `"`} {
		if !strings.Contains(s, want) {
			t.Errorf("lacks %s:\n%s", want, s)
		}
	}
	for _, not := range []string{"imap.a.example", "caldav", "oauth-public"} {
		if strings.Contains(s, not) {
			t.Errorf("has %s:\n%s", not, s)
		}
	}
}
