package protocols

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
)

func TestAutoconfigGolden(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(res, Options{})
	for _, tc := range []struct{ name, host, target string }{
		{"alice", "", "/mail/config-v1.1.xml?emailaddress=alice@example.com"},
		{"alice-alias", "", "/mail/config-v1.1.xml?emailaddress=a.example@example.com"},
		{"bob", "", "/mail/config-v1.1.xml?emailaddress=bob%40example.com"},
		{"carol-disabled", "", "/mail/config-v1.1.xml?emailaddress=carol@example.com"},
		{"nobody", "", "/mail/config-v1.1.xml?emailaddress=nobody@example.com"},
		{"dave-mailhost", "", "/mail/config-v1.1.xml?emailaddress=dave@example.com"},
		{"no-address", "autoconfig.example.com", "/mail/config-v1.1.xml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, h, http.MethodGet, tc.host, tc.target)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			golden(t, "autoconfig/"+tc.name+".xml", rec.Body.Bytes())
		})
	}
}

// The demo contract (README, "Try it"), checked on the parsed document.
func TestAutoconfigDemoContract(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(res, Options{})
	parse := func(addr string) clientConfig {
		t.Helper()
		rec := get(t, h, http.MethodGet, "", "/mail/config-v1.1.xml?emailaddress="+addr)
		var cc clientConfig
		if err := xml.Unmarshal(rec.Body.Bytes(), &cc); err != nil {
			t.Fatalf("%s: %v\n%s", addr, err, rec.Body)
		}
		return cc
	}
	types := func(cc clientConfig) (in []string, users map[string]bool) {
		users = map[string]bool{}
		for _, s := range append(cc.Provider.Incoming, cc.Provider.Outgoing...) {
			users[s.Username] = true
		}
		for _, s := range cc.Provider.Incoming {
			in = append(in, s.Type)
		}
		return in, users
	}
	bobIn, bobUsers := types(parse("bob@example.com"))
	if strings.Join(bobIn, ",") != "imap" || !bobUsers["bob.login"] || len(bobUsers) != 1 {
		t.Errorf("bob: incoming %v users %v, want imap only as bob.login", bobIn, bobUsers)
	}
	aliceIn, aliceUsers := types(parse("alice@example.com"))
	if strings.Join(aliceIn, ",") != "imap,pop3" || !aliceUsers["alice"] {
		t.Errorf("alice: incoming %v users %v, want imap,pop3 as alice", aliceIn, aliceUsers)
	}
	carol, nobody := parse("carol@example.com"), parse("nobody@example.com")
	ci, _ := types(carol)
	ni, _ := types(nobody)
	if strings.Join(ci, ",") != strings.Join(ni, ",") || len(carol.Provider.Outgoing) != len(nobody.Provider.Outgoing) {
		t.Errorf("carol (disabled) %v differs in shape from nobody %v", ci, ni)
	}
	if carol.Provider.Incoming[0].Username != "carol@example.com" {
		t.Errorf("disabled account login = %q, want the typed address", carol.Provider.Incoming[0].Username)
	}
}

func TestAutoconfigHTTP(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(res, Options{})
	for _, tc := range []struct {
		name, method, host, target string
		status                     int
		bodyHas                    string
	}{
		{"well-known path", "GET", "example.com", "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob@example.com", 200, "bob.login"},
		{"host autoconfig.domain", "GET", "autoconfig.example.com", "/mail/config-v1.1.xml", 200, "%EMAILADDRESS%"},
		{"host with port", "GET", "autoconfig.example.com:8080", "/mail/config-v1.1.xml", 200, "%EMAILADDRESS%"},
		{"host bare domain mixed case", "GET", "Example.COM", "/.well-known/autoconfig/mail/config-v1.1.xml", 200, "<domain>example.com</domain>"},
		{"host unknown", "GET", "autoconfig.unknown.org", "/mail/config-v1.1.xml", 404, "domain not served here"},
		{"host by IP without address", "GET", "127.0.0.1:8080", "/mail/config-v1.1.xml", 404, "domain not served here"},
		{"unknown domain", "GET", "", "/mail/config-v1.1.xml?emailaddress=x@unknown.org", 404, "domain not served here"},
		{"malformed address", "GET", "", "/mail/config-v1.1.xml?emailaddress=not-an-address", 400, "invalid e-mail address"},
		{"filter metacharacters", "GET", "", "/mail/config-v1.1.xml?emailaddress=a(b)%5C@example.com", 400, "invalid e-mail address"},
		{"NUL byte", "GET", "", "/mail/config-v1.1.xml?emailaddress=a%00b@example.com", 400, "invalid e-mail address"},
		{"star is a legal atext character, not a wildcard", "GET", "", "/mail/config-v1.1.xml?emailaddress=*@example.com", 200, "<username>*@example.com</username>"},
		{"query key case", "GET", "", "/mail/config-v1.1.xml?EmailAddress=bob@example.com", 200, "bob.login"},
		{"empty address falls back to host", "GET", "autoconfig.example.com", "/mail/config-v1.1.xml?emailaddress=", 200, "%EMAILADDRESS%"},
		{"IDN domain unknown", "GET", "", "/mail/config-v1.1.xml?emailaddress=a@b%C3%BCcher.example", 404, "domain not served here"},
		{"upper-case domain", "GET", "", "/mail/config-v1.1.xml?emailaddress=bob@EXAMPLE.COM", 200, "bob.login"},
		{"POST not allowed", "POST", "", "/mail/config-v1.1.xml?emailaddress=bob@example.com", 405, "method not allowed"},
		{"unknown path", "GET", "", "/nope", 404, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, h, tc.method, tc.host, tc.target)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.bodyHas) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body, tc.status, tc.bodyHas)
			}
			if rec.Code >= 400 && rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("error Content-Type %q", rec.Header().Get("Content-Type"))
			}
		})
	}
}

func TestAutoconfigHEAD(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	rec := get(t, NewHandler(res, Options{}), http.MethodHead, "", "/mail/config-v1.1.xml?emailaddress=bob@example.com")
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") == "0" {
		t.Errorf("HEAD: %d, body %d bytes, Content-Length %q", rec.Code, rec.Body.Len(), rec.Header().Get("Content-Length"))
	}
}

func TestAutoconfigRejectMode(t *testing.T) {
	pol, err := policy.New(policy.Config{Login: "{uid}", Unknown: policy.UnknownReject})
	if err != nil {
		t.Fatal(err)
	}
	ds, _ := policy.NewDomains(demoDomains())
	dir := &demoDirectory{dir: demoDir()}
	res, _ := policy.NewResolver(dir, pol, ds, policy.DefaultCacheConfig(), nil)
	h := NewHandler(res, Options{})
	for addr, want := range map[string]int{"bob@example.com": 200, "carol@example.com": 404, "nobody@example.com": 404} {
		if rec := get(t, h, "GET", "", "/mail/config-v1.1.xml?emailaddress="+addr); rec.Code != want {
			t.Errorf("%s: %d, want %d", addr, rec.Code, want)
		}
	}
}

func TestAutoconfigDirectoryDown(t *testing.T) {
	cfg := policy.DefaultCacheConfig()
	cfg.OnDirectoryError = "fail"
	pol, _ := policy.New(policy.Config{Login: "{uid}"})
	ds, _ := policy.NewDomains(demoDomains())
	dir := &demoDirectory{dir: demoDir()}
	dir.fail.Store(true)
	res, _ := policy.NewResolver(dir, pol, ds, cfg, nil)
	rec := get(t, NewHandler(res, Options{}), "GET", "", "/mail/config-v1.1.xml?emailaddress=bob@example.com")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("directory down with on_directory_error=fail: %d %q", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), string(errDirectoryDown)) {
		t.Errorf("internal error text leaked to the client: %q", rec.Body)
	}
}

// Each client quirk of CLIENTS.md (§6) that concerns autoconfig.
func TestAutoconfigQuirks(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(res, Options{})
	bob := get(t, h, "GET", "", "/mail/config-v1.1.xml?emailaddress=bob%40example.com")

	t.Run("quirk01_content_type_text_xml", func(t *testing.T) {
		if ct := bob.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
			t.Errorf("Content-Type %q does not start with text/xml", ct)
		}
	})
	t.Run("quirk02_percent_encoded_at_and_no_address", func(t *testing.T) {
		if !strings.Contains(bob.Body.String(), "<username>bob.login</username>") {
			t.Errorf("%%40 not decoded: %s", bob.Body)
		}
		// Thunderbird for Android sends no ?emailaddress= at all.
		rec := get(t, h, "GET", "autoconfig.example.com", "/mail/config-v1.1.xml")
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "<username>%EMAILADDRESS%</username>") {
			t.Errorf("no address: %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("quirk06_no_namespace_prefixes", func(t *testing.T) {
		dec := xml.NewDecoder(bytes.NewReader(bob.Body.Bytes()))
		for {
			tok, err := dec.RawToken()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if se, ok := tok.(xml.StartElement); ok && (se.Name.Space != "" || strings.Contains(se.Name.Local, ":")) {
				t.Errorf("element %s:%s has a prefix", se.Name.Space, se.Name.Local)
			}
		}
	})
	t.Run("quirk07_numeric_looking_username_verbatim", func(t *testing.T) {
		// Thunderbird's JXON may coerce "00123" to a number; we can only
		// make sure the document carries the login exactly as the directory has it.
		d, _ := policy.NewDomains(demoDomains())
		a := d["example.com"].DefaultAccount(policy.Address{Local: "00123", Domain: "example.com"}, "00123")
		body, err := renderAutoconfig(a)
		if err != nil || !bytes.Contains(body, []byte("<username>00123</username>")) {
			t.Errorf("username not verbatim: %v %s", err, body)
		}
	})
	t.Run("quirk08_complete_blocks_and_no_plain_socket", func(t *testing.T) {
		domains := demoDomains()
		domains[0].Services = append(domains[0].Services, policy.ServiceConfig{Type: "imap", Host: "mail.example.com", Port: 143, Socket: "plain"})
		res, _ := newDemoResolver(t, domains)
		rec := get(t, NewHandler(res, Options{}), "GET", "", "/mail/config-v1.1.xml?emailaddress=alice@example.com")
		var cc clientConfig
		if err := xml.Unmarshal(rec.Body.Bytes(), &cc); err != nil {
			t.Fatal(err)
		}
		for _, s := range append(cc.Provider.Incoming, cc.Provider.Outgoing...) {
			if s.Hostname == "" || s.Port == 0 || s.SocketType == "" || len(s.Authentication) == 0 || s.Username == "" {
				t.Errorf("incomplete %s block: %+v", s.Type, s)
			}
			if s.SocketType != "SSL" && s.SocketType != "STARTTLS" {
				t.Errorf("socketType %q would make Thunderbird for Android reject the document", s.SocketType)
			}
		}
		if len(cc.Provider.Incoming) != 2 {
			t.Errorf("want the two TLS incoming servers only, got %d", len(cc.Provider.Incoming))
		}
	})
	t.Run("quirk09_no_byte_order_mark", func(t *testing.T) {
		if bytes.HasPrefix(bob.Body.Bytes(), []byte("\xef\xbb\xbf")) || !bytes.HasPrefix(bob.Body.Bytes(), []byte("<?xml")) {
			t.Errorf("document does not start with <?xml: %q", bob.Body.Bytes()[:8])
		}
	})
	t.Run("quirk10_oauth2_keeps_password_fallback_order", func(t *testing.T) {
		domains := demoDomains()
		domains[0].Services[0].Auth = []string{"OAuth2", "password-cleartext"}
		res, _ := newDemoResolver(t, domains)
		rec := get(t, NewHandler(res, Options{}), "GET", "", "/mail/config-v1.1.xml?emailaddress=bob@example.com")
		if !strings.Contains(rec.Body.String(), "<authentication>OAuth2</authentication>\n      <authentication>password-cleartext</authentication>") {
			t.Errorf("OAuth2 must be followed by the password method:\n%s", rec.Body)
		}
	})
	t.Run("quirk11_no_addThisServer", func(t *testing.T) {
		if strings.Contains(bob.Body.String(), "addThisServer") {
			t.Error("addThisServer is ignored by current Thunderbird; do not send it")
		}
	})
}

func TestAutoconfigEscapesDirectoryData(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	d, _ := res.Domain(context.Background(), "example.com")
	evil := *d
	evil.Provider = `Evil </displayName><x>"&'`
	body, err := renderAutoconfig(evil.DefaultAccount(policy.Address{Local: "a", Domain: "example.com"}, "a&<b>"))
	if err != nil {
		t.Fatal(err)
	}
	var cc clientConfig
	if err := xml.Unmarshal(body, &cc); err != nil {
		t.Fatalf("rendered document does not parse: %v", err)
	}
	if cc.Provider.DisplayName != evil.Provider || cc.Provider.Incoming[0].Username != "a&<b>" {
		t.Errorf("round trip changed values: %q %q", cc.Provider.DisplayName, cc.Provider.Incoming[0].Username)
	}
}

// Answers may be kept by the client only; error documents not at all.
func TestCacheControl(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(res, Options{})
	if got := get(t, h, "GET", "", "/mail/config-v1.1.xml?emailaddress=bob@example.com").Header().Get("Cache-Control"); got != "private, no-cache" {
		t.Errorf("autoconfig Cache-Control %q", got)
	}
	req := httptest.NewRequest("POST", "/autodiscover/autodiscover.xml", strings.NewReader("<not xml"))
	req.Host = "127.0.0.1:8080" // not a served domain over plain HTTP: no redirect probe
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get("Cache-Control"); rec.Code != 200 || !strings.Contains(rec.Body.String(), "<ErrorCode>600</ErrorCode>") || got != "no-store" {
		t.Errorf("error document: %d, Cache-Control %q\n%s", rec.Code, got, rec.Body)
	}
}
