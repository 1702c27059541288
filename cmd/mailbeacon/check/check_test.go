package check

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check/checktest"
	"github.com/mailbeacon/mailbeacon/policy"
)

func testDomain(t *testing.T) *policy.Domain {
	t.Helper()
	ds, err := policy.NewDomains([]policy.DomainConfig{{Name: "example.com", Services: []policy.ServiceConfig{
		{Type: "imap", Host: "mail.example.com", Port: 993, Socket: "tls"},
		{Type: "smtp", Host: "mail.example.com", Port: 587, Socket: "starttls"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return ds["example.com"]
}

func TestVerifyCertificate(t *testing.T) {
	ca, other := checktest.NewCA(t), checktest.NewCA(t)
	now := time.Now()
	leaf := func(ca *checktest.CA, notAfter time.Time, names ...string) []*x509.Certificate {
		c := ca.Issue(t, notAfter, names...)
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return []*x509.Certificate{x}
	}
	c := &checker{o: Options{RootCAs: ca.Pool, Now: time.Now, MinValidity: 14 * 24 * time.Hour}}
	for _, tc := range []struct {
		name   string
		chain  []*x509.Certificate
		status Status
		detail string
	}{
		{"valid", leaf(ca, now.Add(60*24*time.Hour), "autoconfig.example.com"), OK, "valid for autoconfig.example.com until"},
		{"wrong name", leaf(ca, now.Add(60*24*time.Hour), "www.example.com", "example.com"), Fail, "the certificate is for www.example.com, example.com, not autoconfig.example.com"},
		{"unknown CA", leaf(other, now.Add(60*24*time.Hour), "autoconfig.example.com"), Fail, "not issued by a trusted CA"},
		{"expired", leaf(ca, now.Add(-time.Minute), "autoconfig.example.com"), Fail, "expired or not yet valid"},
		{"near expiry", leaf(ca, now.Add(5*24*time.Hour+time.Hour), "autoconfig.example.com"), Fail, "valid, but expires in 5 days"},
		{"none", nil, Fail, "no certificate presented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, detail, fix := c.verify("autoconfig.example.com", tc.chain)
			if st != tc.status || !strings.Contains(detail, tc.detail) {
				t.Errorf("verify = %s %q, want %s %q", st, detail, tc.status, tc.detail)
			}
			if st == Fail && fix == "" {
				t.Error("a failure without a fix")
			}
		})
	}
}

func TestValidateAutoconfig(t *testing.T) {
	c := &checker{d: testDomain(t)}
	const good = `<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1"><emailProvider id="example.com"><domain>example.com</domain>
<incomingServer type="imap"><hostname>mail.example.com</hostname><port>993</port><socketType>SSL</socketType><authentication>password-cleartext</authentication><username>bob</username></incomingServer>
<outgoingServer type="smtp"><hostname>mail.example.com</hostname><port>587</port><socketType>STARTTLS</socketType><authentication>password-cleartext</authentication><username>bob</username></outgoingServer>
</emailProvider></clientConfig>`
	for _, tc := range []struct {
		name    string
		ctype   string
		body    string
		problem string // "" for none
	}{
		{"valid", "text/xml; charset=utf-8", good, ""},
		{"application/xml", "application/xml", good, ""},
		{"html", "text/html", good, `Content-Type "text/html"`},
		{"bom", "text/xml", "\xef\xbb\xbf" + good, "byte-order mark"},
		{"prefixed root", "text/xml", strings.Replace(strings.Replace(good, "<clientConfig", `<a:clientConfig xmlns:a="urn:x"`, 1), "</clientConfig>", "</a:clientConfig>", 1), "namespace prefix"},
		{"not xml", "text/xml", "<html>", "not XML"},
		{"pop3 not configured", "text/xml", strings.Replace(good, `type="imap"`, `type="pop3"`, 1), "offers pop3, which the configuration does not"},
		{"wrong port", "text/xml", strings.Replace(good, "<port>993</port>", "<port>143</port>", 1), "offers imap on port 143"},
		{"no outgoing", "text/xml", good[:strings.Index(good, "<outgoingServer")] + "</emailProvider></clientConfig>", "needs an incoming (IMAP or POP3) and an outgoing"},
		{"incomplete", "text/xml", strings.Replace(good, "<username>bob</username>", "", 1), "is incomplete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, problems, _ := c.validateAutoconfig(&answer{status: 200, ctype: tc.ctype, body: []byte(tc.body)})
			got := strings.Join(problems, "; ")
			if (tc.problem == "") != (got == "") || !strings.Contains(got, tc.problem) {
				t.Errorf("problems %q, want %q", got, tc.problem)
			}
		})
	}
}

// A URL-based server (Thunderbird's type="ews") is checked by its URL.
func TestValidateAutoconfigEWS(t *testing.T) {
	ds, err := policy.NewDomains([]policy.DomainConfig{{Name: "example.com", Services: []policy.ServiceConfig{
		{Type: "imap", Host: "mail.example.com", Port: 993, Socket: "tls"},
		{Type: "smtp", Host: "mail.example.com", Port: 587, Socket: "starttls"},
	}, EWSURL: "https://mail.example.com/EWS/Exchange.asmx"}})
	if err != nil {
		t.Fatal(err)
	}
	c := &checker{d: ds["example.com"]}
	doc := func(ews string) []byte {
		return []byte(`<clientConfig version="1.1"><emailProvider id="example.com"><domain>example.com</domain>
<incomingServer type="imap"><hostname>mail.example.com</hostname><port>993</port><socketType>SSL</socketType><authentication>password-cleartext</authentication><username>bob</username></incomingServer>
` + ews + `
<outgoingServer type="smtp"><hostname>mail.example.com</hostname><port>587</port><socketType>STARTTLS</socketType><authentication>password-cleartext</authentication><username>bob</username></outgoingServer>
</emailProvider></clientConfig>`)
	}
	for _, tc := range []struct{ name, ews, problem string }{
		{"configured", `<incomingServer type="ews"><url>https://mail.example.com/EWS/Exchange.asmx</url><authentication>password-cleartext</authentication><username>bob</username></incomingServer>`, ""},
		{"other url", `<incomingServer type="ews"><url>https://old.example.com/EWS/Exchange.asmx</url><authentication>password-cleartext</authentication><username>bob</username></incomingServer>`, "offers ews at https://old.example.com/EWS/Exchange.asmx, which the configuration does not"},
		{"no username", `<incomingServer type="ews"><url>https://mail.example.com/EWS/Exchange.asmx</url><authentication>password-cleartext</authentication></incomingServer>`, "is incomplete (url, authentication, username)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			summary, problems, _ := c.validateAutoconfig(&answer{status: 200, ctype: "text/xml", body: doc(tc.ews)})
			got := strings.Join(problems, "; ")
			if (tc.problem == "") != (got == "") || !strings.Contains(got, tc.problem) {
				t.Errorf("problems %q, want %q", got, tc.problem)
			}
			if tc.problem == "" && !strings.Contains(summary, "ews https://mail.example.com/EWS/Exchange.asmx") {
				t.Errorf("summary %q", summary)
			}
		})
	}
}

func TestValidatePOX(t *testing.T) {
	c := &checker{d: testDomain(t)}
	const ok = `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"><Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"><Account><AccountType>email</AccountType><Action>settings</Action>` +
		`<Protocol><Type>IMAP</Type><Server>mail.example.com</Server><Port>993</Port><SSL>on</SSL><Encryption>SSL</Encryption></Protocol>` +
		`<Protocol><Type>SMTP</Type><Server>mail.example.com</Server><Port>587</Port><SSL>on</SSL><Encryption>TLS</Encryption></Protocol></Account></Response></Autodiscover>`
	for _, tc := range []struct {
		name, body, problem string
	}{
		{"valid", ok, ""},
		{"error 500", `<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"><Response><Error><ErrorCode>500</ErrorCode><Message>The e-mail address cannot be found.</Message></Error></Response></Autodiscover>`, "error 500: The e-mail address cannot be found."},
		{"https namespace", strings.Replace(ok, "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006", "https://schemas.microsoft.com/exchange/autodiscover/responseschema/2006", 1), "quirk 14"},
		{"starttls read as ssl", strings.Replace(ok, "<Encryption>TLS</Encryption>", "<Encryption>SSL</Encryption>", 1), "offers SMTP on port 587 (tls)"},
		{"no protocols", strings.NewReplacer(ok[strings.Index(ok, "<Protocol>"):strings.Index(ok, "</Account>")], "").Replace(ok), "no Protocol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, problems, _ := c.validatePOX(&answer{status: 200, ctype: "text/xml", body: []byte(tc.body)})
			got := strings.Join(problems, "; ")
			if (tc.problem == "") != (got == "") || !strings.Contains(got, tc.problem) {
				t.Errorf("problems %q, want %q", got, tc.problem)
			}
		})
	}
}

func TestReportText(t *testing.T) {
	r := &Report{Address: "bob@example.com", Domain: "example.com"}
	r.add(Result{Section: "DNS", Check: "a", Status: OK, Detail: "fine"})
	r.add(Result{Section: "DNS", Check: "b", Status: Fail, Detail: "no record", Fix: "add:\nb. 3600 IN A 192.0.2.1"})
	r.add(Result{Section: "HTTP", Check: "c", Status: Skip, Detail: "404"})
	var out bytes.Buffer
	if err := r.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	want := `mailbeacon check bob@example.com (domain example.com)

DNS
  ✔ a: fine
  ✘ b: no record
      fix: add:
           b. 3600 IN A 192.0.2.1

HTTP
  - c: 404

3 checks: 1 passed, 1 failed, 0 warnings, 1 skipped
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	if r.OK() {
		t.Error("a report with a failure is OK")
	}
}
