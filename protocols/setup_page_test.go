package protocols

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/html"
)

func TestSetupPage(t *testing.T) {
	_, h := appleNewFakeServer(t, Options{})
	q := func(addr string) string { return "/?emailaddress=" + url.QueryEscape(addr) }
	tests := []struct {
		name    string
		method  string
		target  string
		host    string
		status  int
		has     []string // substrings the page must contain
		hasNot  []string // substrings it must not contain
		servers map[string]int
	}{
		{name: "empty form", target: "/", host: "example.com", status: 200,
			has:    []string{`<label for="emailaddress">`, `id="emailaddress" name="emailaddress"`, `<h1>Example Mail setup</h1>`, `lang="en"`, `name="viewport"`},
			hasNot: []string{`id="settings"`, `role="alert"`, "<script"}},
		{name: "empty form on an unknown host", target: "/", host: "127.0.0.1:8080", status: 200,
			has: []string{`<h1>E-mail setup</h1>`}},
		{name: "bob", target: q("bob@example.com"), status: 200,
			has: []string{
				`Settings for <span class="address">bob@example.com</span>`,
				`<dd class="host">mail.example.com</dd>`, `<dd class="port">993</dd>`, `<dd class="port">465</dd>`, `<dd class="port">587</dd>`,
				`<dd class="security">SSL/TLS</dd>`, `<dd class="security">STARTTLS</dd>`, `<dd class="login">bob.login</dd>`,
				`href="/mobileconfig?emailaddress=bob%40example.com"`, `href="/mobileconfig?emailaddress=bob%40example.com&amp;platform=mac"`,
				`Calendar (CalDAV)`, `https://dav.example.com/dav/`,
			},
			hasNot:  []string{"POP3", "ActiveSync</h3>", "Bob Builder", `<dd class="login">bob@example.com</dd>`},
			servers: map[string]int{"incoming": 1, "outgoing": 2, "activesync": 0, "caldav": 1, "carddav": 1}},
		{name: "alice", target: q("alice@example.com"), status: 200,
			has:     []string{"Incoming mail (IMAP)", "Incoming mail (POP3)", "Exchange ActiveSync", `<dd class="login">alice</dd>`, "Exchange ActiveSync or IMAP"},
			hasNot:  []string{"Alice Example"},
			servers: map[string]int{"incoming": 2, "outgoing": 2, "activesync": 1, "caldav": 1, "carddav": 1}},
		{name: "display name never shown", target: q("dave@example.com"), status: 200,
			has:    []string{`<dd class="host">mail2.example.com</dd>`},
			hasNot: []string{"Dave", "Ops", "Smith", "Über"}},
		{name: "unknown address gets the domain defaults", target: q("nobody@example.com"), status: 200,
			has:     []string{`<dd class="login">nobody@example.com</dd>`, "Incoming mail (POP3)", "Exchange ActiveSync"},
			servers: map[string]int{"incoming": 2, "outgoing": 2, "activesync": 1}},
		{name: "typed with spaces and capitals", target: q("  Bob@EXAMPLE.com "), status: 200,
			has: []string{`<dd class="login">bob.login</dd>`, `value="Bob@EXAMPLE.com"`}},
		{name: "POP only, no profile for Mac/iPhone needed", target: q("frank@example.com"), status: 200,
			has:    []string{"There is no profile for this address"},
			hasNot: []string{`id="profile-link"`, `id="mac-profile-link"`}},
		{name: "cleartext servers are not offered", target: q("zoe@example.org"), status: 200,
			has:    []string{`<dd class="host">pop.example.org</dd>`, "Encrypted password (CRAM-MD5)"},
			hasNot: []string{"imap.example.org"}},
		{name: "invalid address", target: q("not an address"), status: 400,
			has:    []string{`role="alert"`, "That is not an e-mail address", `aria-invalid="true"`, `value="not an address"`},
			hasNot: []string{`id="settings"`}},
		{name: "markup in the address is escaped", target: q(`"><script>alert(1)</script>`), status: 400,
			has:    []string{`value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"`},
			hasNot: []string{"<script>"}},
		{name: "valid address with HTML-special characters", target: q("o'neil&co@example.com"), status: 200,
			has:    []string{"o&#39;neil&amp;co@example.com", "emailaddress=o%27neil%26co%40example.com"},
			hasNot: []string{"o'neil&co"}},
		{name: "unknown domain", target: q("alice@example.net"), status: 404,
			has: []string{`role="alert"`, "does not set up addresses of that domain"}},
		{name: "directory down", target: q("alice@down.example"), status: 503,
			has: []string{"try again"}},
		{name: "HEAD", method: http.MethodHead, target: q("bob@example.com"), status: 200},
		{name: "POST", method: http.MethodPost, target: "/", status: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.method
			if m == "" {
				m = http.MethodGet
			}
			rec := appleGet(h, m, tt.target, tt.host)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d\n%s", rec.Code, tt.status, rec.Body)
			}
			body := rec.Body.String()
			for _, s := range tt.has {
				if !strings.Contains(body, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			for _, s := range tt.hasNot {
				if strings.Contains(body, s) {
					t.Errorf("page contains %q", s)
				}
			}
			for kind, n := range tt.servers {
				if got := strings.Count(body, `data-kind="`+kind+`"`); got != n {
					t.Errorf("%d %s servers shown, want %d", got, kind, n)
				}
			}
			if m == http.MethodPost {
				return
			}
			hd := rec.Header()
			if !strings.HasPrefix(hd.Get("Content-Type"), "text/html; charset=utf-8") {
				t.Errorf("Content-Type %q", hd.Get("Content-Type"))
			}
			if csp := hd.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
				t.Errorf("Content-Security-Policy %q: want no script at all", csp)
			}
			if hd.Get("Referrer-Policy") != "no-referrer" {
				t.Errorf("Referrer-Policy %q: the address is in the URL", hd.Get("Referrer-Policy"))
			}
			if m == http.MethodHead && rec.Body.Len() != 0 {
				t.Error("HEAD has a body")
			}
		})
	}
}

// TestSetupPageAccessible checks the basics a screen reader and a phone
// need, on the result page.
func TestSetupPageAccessible(t *testing.T) {
	_, h := appleNewFakeServer(t, Options{})
	body := appleGet(h, http.MethodGet, "/?emailaddress=alice@example.com", "").Body.String()
	// Every input has a label pointing at it.
	for _, m := range regexp.MustCompile(`<input[^>]*\bid="([^"]+)"`).FindAllStringSubmatch(body, -1) {
		if !strings.Contains(body, `<label for="`+m[1]+`">`) {
			t.Errorf("input %s has no label", m[1])
		}
	}
	if n := strings.Count(body, "<h1>"); n != 1 {
		t.Errorf("%d h1 headings", n)
	}
	for _, s := range []string{`<html lang="en">`, `<main>`, `content="width=device-width, initial-scale=1"`, `<button type="submit">`} {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %s", s)
		}
	}
	if strings.Contains(body, "<script") || regexp.MustCompile(`<[^>]+\son[a-z]+=`).MatchString(body) {
		t.Error("page has script")
	}
}

func TestSetupCSS(t *testing.T) {
	_, h := appleNewFakeServer(t, Options{})
	rec := appleGet(h, http.MethodGet, "/setup.css", "")
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/css") || !strings.Contains(rec.Body.String(), "prefers-color-scheme") {
		t.Errorf("status %d, type %q, %d bytes", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
	}
}

// FuzzSetupPage: no input makes the page or the profile endpoint panic or
// answer 500, and nothing typed comes back unescaped.
func FuzzSetupPage(f *testing.F) {
	for _, s := range []string{"bob@example.com", "", "<b>@example.com", "a@b", "\xff@example.com", "x@down.example", strings.Repeat("a", 70) + "@example.com"} {
		f.Add(s)
	}
	_, h := appleNewFakeServer(f, Options{})
	f.Fuzz(func(t *testing.T, addr string) {
		for _, p := range []string{"/", "/mobileconfig"} {
			rec := appleGet(h, http.MethodGet, p+"?emailaddress="+url.QueryEscape(addr), "")
			if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("%s: status %d for %q", p, rec.Code, addr)
			}
			if p == "/" {
				checkEchoedSafely(t, rec.Body.String(), addr)
			}
		}
	})
}

// checkEchoedSafely parses the page as a browser would: it must hold no
// script element, and the address field must hold exactly what was typed
// (trimmed), so nothing typed turned into markup.
func checkEchoedSafely(t *testing.T, page, typed string) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	value, found := "", false
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		if n.Data == "script" {
			t.Fatalf("%q produced a script element", typed)
		}
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") {
				t.Fatalf("%q produced an event handler attribute %s", typed, a.Key)
			}
		}
		if n.Data == "input" && attr(n, "id") == "emailaddress" {
			value, found = attr(n, "value"), true
		}
	}
	if !found {
		t.Fatalf("%q: no address field on the page", typed)
	}
	printable := utf8.ValidString(typed) && !strings.ContainsFunc(typed, func(r rune) bool { return r < 0x20 || r == 0x7f })
	if want := strings.TrimSpace(typed); printable && value != want {
		t.Fatalf("address field holds %q, want %q", value, want)
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}
