package main

// What each client format answers for users behind destinations, through
// the whole stack against a real slapd holding a migration in progress
// (ldaptest.DestinationLDIF): olga on premises, mike in Microsoft 365 by
// targetAddress, nina likewise without POP3, sam at site B by group, and
// an unknown address, whose answers must not change at all.

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// destinationAnswersConfig is example.com (IMAP, POP3, SMTP and EWS of its
// own) with the m365 preset and a site B of its own hosts without a
// redirect; without destinations, the same domain alone.
func destinationAnswersConfig(t *testing.T, srv *ldaptest.Server, destinations bool) config {
	t.Helper()
	text := destinationConfigText(t, srv)
	// Site B without a redirect: its users get its servers everywhere.
	text = strings.Replace(text, `      autodiscover:
        redirect_url: "https://autodiscover.site-b.example.com/autodiscover/autodiscover.xml"
`, "", 1)
	text = strings.Replace(text, "      - {type: smtp, host: mail.example.com, port: 465, socket: tls}\n",
		"      - {type: smtp, host: mail.example.com, port: 465, socket: tls}\n      - {type: ews, url: \"https://mail.example.com/EWS/Exchange.asmx\"}\n", 1)
	if !destinations {
		start, end := strings.Index(text, "  destinations:"), strings.Index(text, "domains:")
		text = text[:start] + text[end:]
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, text)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := loadConfig(f, path)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	return cfg
}

func destinationHandler(t *testing.T, srv *ldaptest.Server, destinations bool, privacy ...string) http.Handler {
	t.Helper()
	cfg := destinationAnswersConfig(t, srv, destinations)
	if len(privacy) > 0 {
		cfg.Policy.Privacy = privacy[0]
	}
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.source.Close() })
	return protocols.NewHandler(a.resolver, a.handlerOptions(nil))
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// The m365 user's POX answer, in full: the tenant address and nothing else.
const mikeRedirect = `<?xml version="1.0" encoding="UTF-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
    <Account>
      <Action>redirectAddr</Action>
      <RedirectAddr>mike@contoso.mail.onmicrosoft.com</RedirectAddr>
    </Account>
  </Response>
</Autodiscover>
`

func TestDestinationSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.Destination()...)
	h := destinationHandler(t, srv, true)
	type want struct {
		status     int
		has, hasNo []string
	}
	autoconfig := func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress="+addr, nil)
	}
	v2 := func(proto string) func(string) *http.Request {
		return func(addr string) *http.Request {
			return httptest.NewRequest("GET", "/autodiscover/autodiscover.json/v1.0/"+addr+"?Protocol="+proto, nil)
		}
	}
	profile := func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/mobileconfig?emailaddress="+addr, nil)
	}
	setup := func(addr string) *http.Request { return httptest.NewRequest("GET", "/?emailaddress="+addr, nil) }
	outlook := func(addr string) *http.Request { return poxRequest(addr, poxOutlook) }
	mobilesync := func(addr string) *http.Request { return poxRequest(addr, poxMobilesync) }
	const (
		ownServers = "<hostname>mail.example.com</hostname>"
		m365SMTP   = "<hostname>smtp.office365.com</hostname>"
		graph      = `<incomingServer type="graph">` + "\n      <url>https://graph.microsoft.com</url>\n      <authentication>OAuth2</authentication>"
		m365OAuth  = "<issuer>login.microsoftonline.com</issuer>"
		noSettings = "<Status>2</Status>"
		onPremEWS  = `{"Protocol":"Ews","Url":"https://mail.example.com/EWS/Exchange.asmx"}`
		badProto   = `"ErrorCode":"InvalidProtocol"`
		v1         = `{"Protocol":"AutodiscoverV1","Url":"https://autodiscover.example.com/autodiscover/autodiscover.xml"}`
	)
	for _, tc := range []struct {
		format string
		req    func(addr string) *http.Request
		users  map[string]want
	}{
		{"autoconfig", autoconfig, map[string]want{
			"olga": {200, []string{ownServers, `<incomingServer type="ews">`, "<displayName>Example</displayName>"}, []string{"office365", "graph", "oAuth2"}},
			"mike": {200, []string{"<hostname>outlook.office365.com</hostname>", m365SMTP, graph, m365OAuth, `<incomingServer type="pop3">`,
				"<displayName>Microsoft 365</displayName>", "<clientID>00000000-0000-0000-0000-000000000001</clientID>", "<username>mike@example.com</username>"},
				[]string{ownServers, `type="ews"`, "password-cleartext"}},
			"nina": {200, []string{m365SMTP, graph}, []string{"pop3", ownServers}},
			"sam": {200, []string{"<hostname>imap.site-b.example.com</hostname>", "<hostname>smtp.site-b.example.com</hostname>",
				"<displayName>Site B</displayName>", "<username>sam</username>"}, []string{ownServers, "oAuth2", `type="ews"`}},
		}},
		{"autodiscover outlook", outlook, map[string]want{
			"olga": {200, []string{"<Action>settings</Action>", "<Server>mail.example.com</Server>", "<Type>EXPR</Type>"}, []string{"redirect"}},
			"mike": {200, []string{mikeRedirect}, nil},
			"nina": {200, []string{"<Action>redirectAddr</Action>", "<RedirectAddr>nina@contoso.mail.onmicrosoft.com</RedirectAddr>"}, []string{"POP3", "<User>"}},
			"sam": {200, []string{"<Action>settings</Action>", "<Server>imap.site-b.example.com</Server>", "<Server>pop.site-b.example.com</Server>"},
				[]string{"mail.example.com", "redirect"}},
		}},
		{"autodiscover mobilesync", mobilesync, map[string]want{
			"olga": {200, []string{noSettings}, []string{"Redirect"}},
			"mike": {200, []string{"<Action>\n      <Redirect>mike@contoso.mail.onmicrosoft.com</Redirect>\n    </Action>"}, []string{"<User>", "Settings"}},
			"nina": {200, []string{"<Redirect>nina@contoso.mail.onmicrosoft.com</Redirect>"}, nil},
			"sam":  {200, []string{noSettings}, []string{"Redirect"}},
		}},
		{"autodiscover v2 EWS", v2("EWS"), map[string]want{
			"olga": {200, []string{onPremEWS}, nil},
			"mike": {400, []string{badProto}, []string{"mail.example.com", "Ews"}},
			"nina": {400, []string{badProto}, nil},
			"sam":  {400, []string{badProto}, []string{"Ews"}},
		}},
		{"autodiscover v2 AutodiscoverV1", v2("AutodiscoverV1"), map[string]want{
			"olga": {200, []string{v1}, nil}, "mike": {200, []string{v1}, nil}, "sam": {200, []string{v1}, nil},
		}},
		{"apple profile", profile, map[string]want{
			"olga": {200, []string{"<string>mail.example.com</string>", "<string>EmailTypeIMAP</string>"}, nil},
			// OAuth2 only: Apple's mail payload cannot say it, and m365 lists nothing else.
			"mike": {404, nil, []string{"office365"}},
			"nina": {404, nil, nil},
			"sam": {200, []string{"<string>imap.site-b.example.com</string>", "<string>smtp.site-b.example.com</string>", "<string>Site B</string>"},
				[]string{"mail.example.com", "EmailTypePOP"}},
		}},
		{"setup page", setup, map[string]want{
			"olga": {200, []string{`<dd class="host">mail.example.com</dd>`}, []string{`class="provider"`}},
			"mike": {200, []string{`<span class="provider-name">Microsoft 365</span>`, `<dd class="host">outlook.office365.com</dd>`,
				`<dd class="url">https://graph.microsoft.com</dd>`, "https://login.microsoftonline.com/common/v2.0"}, []string{"mail.example.com", "profile-link"}},
			"nina": {200, []string{"Microsoft 365"}, []string{"POP3"}},
			"sam":  {200, []string{`<span class="provider-name">Site B</span>`, `<dd class="host">imap.site-b.example.com</dd>`}, []string{"mail.example.com"}},
		}},
	} {
		t.Run(tc.format, func(t *testing.T) {
			for user, w := range tc.users {
				rec := serve(h, tc.req(user+"@example.com"))
				body := rec.Body.String()
				if rec.Code != w.status {
					t.Errorf("%s: status %d, want %d\n%s", user, rec.Code, w.status, body)
				}
				for _, s := range w.has {
					if !strings.Contains(body, s) {
						t.Errorf("%s: lacks %q\n%s", user, s, body)
					}
				}
				for _, s := range w.hasNo {
					if strings.Contains(body, s) {
						t.Errorf("%s: has %q\n%s", user, s, body)
					}
				}
			}
		})
	}
	// POX: exactly the redirect document.
	if got := serve(h, outlook("mike@example.com")).Body.String(); got != mikeRedirect {
		t.Errorf("mike's POX answer:\n%s\nwant exactly:\n%s", got, mikeRedirect)
	}
	// v2 ActiveSync for the m365 user: none there, so never the domain's.
	var e struct{ ErrorCode string }
	if rec := serve(h, v2("ActiveSync")("mike@example.com")); rec.Code != 400 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.ErrorCode != "InvalidProtocol" {
		t.Errorf("v2 ActiveSync for mike: %d %s", rec.Code, rec.Body)
	}

	// Under privacy strict the redirect address (another address of the
	// user's) stays out of the unauthenticated answer: the tenant's
	// settings instead, in POX and mobilesync alike.
	strict := destinationHandler(t, srv, true, "strict")
	if body := serve(strict, outlook("mike@example.com")).Body.String(); strings.Contains(body, "contoso") ||
		!strings.Contains(body, "<Server>outlook.office365.com</Server>") || !strings.Contains(body, "<Action>settings</Action>") {
		t.Errorf("strict: mike's POX answer:\n%s", body)
	}
	if body := serve(strict, mobilesync("mike@example.com")).Body.String(); strings.Contains(body, "Redirect") {
		t.Errorf("strict: mike's mobilesync answer:\n%s", body)
	}

	// The unknown address: byte for byte what the same directory answers
	// without any destination configured, in every format.
	plain := destinationHandler(t, srv, false)
	for _, req := range []func(string) *http.Request{autoconfig, outlook, mobilesync, v2("EWS"), v2("ActiveSync"), v2("AutodiscoverV1"), profile, setup} {
		a, b := serve(h, req("nobody@example.com")), serve(plain, req("nobody@example.com"))
		if a.Code != b.Code || a.Body.String() != b.Body.String() {
			r := req("nobody@example.com")
			t.Errorf("%s %s: the unknown address's answer changed:\n%d %s\nwas:\n%d %s", r.Method, r.URL, a.Code, a.Body, b.Code, b.Body)
		}
	}
}
