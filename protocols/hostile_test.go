package protocols

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/policy"
)

// The hostile-input table: one row per input, through the whole
// handler (demo policy, in-memory demo directory, default limits), with the
// answer expected and whether the directory may be asked at all. Inputs
// that need a real listener (slow-loris headers and bodies, oversized
// request lines and headers) are rows of cmd/mailbeacon/hostile_test.go;
// LDAP-level escaping against a real slapd is in ldapsource/slapd_test.go.

const (
	billionLaughs = `<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>&lol9;@example.com</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
	xxe = `<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>&xxe;</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
	poxInvalid = "<ErrorCode>600</ErrorCode>"
)

func TestHostileInputs(t *testing.T) {
	domains := append(demoDomains(), policy.DomainConfig{
		Name: "Bücher.Example", Provider: "Bücher Mail",
		Services: []policy.ServiceConfig{{Type: "imap", Host: "mail.xn--bcher-kva.example", Port: 993, Socket: "tls"}},
	})
	res, dir := newDemoResolver(t, domains)
	h := NewHandler(res, Options{Limits: limitsFor(t, DefaultLimitOptions())})
	ac := func(addr string) string { return "/mail/config-v1.1.xml?emailaddress=" + addr }
	pox := "https://autodiscover.example.com/autodiscover/autodiscover.xml"
	long := strings.Repeat("a", 64)

	for i, tc := range []struct {
		name           string
		method, target string
		body           string
		host           string
		headers        []string
		status         int
		has, hasNot    []string // substrings of the answer (body and headers)
		searches       int      // directory searches the row may cause: 0 or 1
	}{
		// LDAP filter metacharacters: refused as addresses before any
		// search, or (atext like * and =) searched for literally.
		{name: "filter close and wildcard", method: "GET", target: ac("bob)(uid=*@example.com"), status: 400},
		{name: "filter or", method: "GET", target: ac("x)(%7C(mail=*@example.com"), status: 400},
		{name: "filter escape", method: "GET", target: ac(`%5C2a@example.com`), status: 400},
		{name: "filter NUL escape", method: "GET", target: ac(`bob%5C00@example.com`), status: 400},
		{name: "star address gets the defaults, not a match", method: "GET", target: ac("*@example.com"), status: 200,
			has: []string{"<username>*@example.com</username>"}, hasNot: []string{"alice", "bob.login"}, searches: 1},
		{name: "star-prefixed address", method: "GET", target: ac("a*@example.com"), status: 200,
			has: []string{"<username>a*@example.com</username>"}, hasNot: []string{"<username>alice</username>"}, searches: 1},
		{name: "star domain", method: "GET", target: ac("bob@*.com"), status: 400},
		{name: "star in JSON path", method: "GET", target: "/autodiscover/autodiscover.json/v1.0/*@example.com?Protocol=ActiveSync", status: 200,
			has: []string{`"Protocol":"ActiveSync"`}, searches: 1},
		{name: "filter in POX address", method: "POST", target: pox, body: adXML("*)(mail=*"), status: 200, has: []string{poxInvalid}},
		// Overlong input.
		{name: "64-byte local part", method: "GET", target: ac(long + "@example.com"), status: 200,
			has: []string{"<username>" + long + "@example.com</username>"}, searches: 1},
		{name: "65-byte local part", method: "GET", target: ac(long + "a@example.com"), status: 400},
		{name: "100 KB address", method: "GET", target: ac(strings.Repeat("a", 100<<10) + "@example.com"), status: 400},
		{name: "overlong address in POX", method: "POST", target: pox, body: adXML(strings.Repeat("b", 300) + "@example.com"), status: 200, has: []string{poxInvalid}},
		{name: "overlong address in JSON", method: "GET", target: "/autodiscover/autodiscover.json/v1.0/" + strings.Repeat("c", 300) + "@example.com?Protocol=ActiveSync", status: 400},
		// Case, IDN and encodings.
		{name: "mixed-case address", method: "GET", target: ac("BoB@ExAmPlE.CoM"), status: 200, has: []string{"<username>bob.login</username>"}, searches: 1},
		{name: "mixed-case again: cached", method: "GET", target: ac("bob@EXAMPLE.com"), status: 200, has: []string{"<username>bob.login</username>"}},
		{name: "percent-encoded @", method: "GET", target: ac("bob%40example.com"), status: 200, has: []string{"<username>bob.login</username>"}},
		{name: "mixed-case query name", method: "GET", target: "/mail/config-v1.1.xml?EmailAddress=bob@example.com", status: 200, has: []string{"<username>bob.login</username>"}},
		{name: "repeated parameter: first wins", method: "GET", target: ac("bob@example.com") + "&emailaddress=alice@example.com", status: 200,
			has: []string{"<username>bob.login</username>"}, hasNot: []string{"<username>alice</username>"}},
		{name: "IDN domain, U-label", method: "GET", target: ac("j%C3%B6rg@B%C3%BCcher.example"), status: 200,
			has: []string{`id="xn--bcher-kva.example"`, "<username>jörg@xn--bcher-kva.example</username>"}, searches: 1},
		{name: "IDN domain, A-label", method: "GET", target: ac("j%C3%B6rg@xn--bcher-kva.example"), status: 200,
			has: []string{"<username>jörg@xn--bcher-kva.example</username>"}},
		{name: "invalid A-label", method: "GET", target: ac("x@xn--zz.example"), status: 400},
		{name: "unconfigured IDN domain", method: "GET", target: ac("x@m%C3%BCller.example"), status: 404},
		{name: "fullwidth dot", method: "GET", target: ac("bob@example%E3%80%82com"), status: 200, has: []string{"<username>bob.login</username>"}},
		{name: "Host header with filter characters", method: "GET", target: "/mail/config-v1.1.xml", host: "autoconfig.example.com)(x", status: 404},
		{name: "Host header mixed case", method: "GET", target: "/mail/config-v1.1.xml", host: "AutoConfig.Example.COM", status: 200, has: []string{"%EMAILADDRESS%"}},
		// NUL bytes and control characters.
		{name: "NUL in query", method: "GET", target: ac("bob%00@example.com"), status: 400},
		{name: "NUL in JSON path", method: "GET", target: "/autodiscover/autodiscover.json/v1.0/bob%00@example.com?Protocol=ActiveSync", status: 400},
		{name: "NUL in POX", method: "POST", target: pox, body: adXML("bob\x00@example.com"), status: 200, has: []string{poxInvalid}},
		{name: "CRLF in address", method: "GET", target: ac("bob%0D%0ASet-Cookie:x@example.com"), status: 400, hasNot: []string{"Set-Cookie"}},
		{name: "invalid UTF-8", method: "GET", target: ac("b%FFob@example.com"), status: 400},
		// XML attacks on the POX endpoint: refused, never expanded.
		{name: "entity expansion", method: "POST", target: pox, body: billionLaughs, status: 200, has: []string{poxInvalid}, hasNot: []string{"lollol"}},
		{name: "external entity", method: "POST", target: pox, body: xxe, status: 200, has: []string{poxInvalid}, hasNot: []string{"root:"}},
		{name: "DOCTYPE only", method: "POST", target: pox, body: `<!DOCTYPE Autodiscover>` + adXML("bob@example.com"), status: 200, has: []string{poxInvalid}},
		{name: "processing instruction and comment", method: "POST", target: pox, body: `<?xml version="1.0"?><!-- x --><?pi x?>` + adXML("bob@example.com"), status: 200,
			has: []string{"<LoginName>bob.login</LoginName>"}},
		{name: "deep nesting", method: "POST", target: pox, body: "<Autodiscover><Request>" + strings.Repeat("<a>", 2000) + strings.Repeat("</a>", 2000) + "</Request></Autodiscover>",
			status: 200, has: []string{poxInvalid}},
		{name: "two addresses", method: "POST", target: pox, status: 200, has: []string{poxInvalid},
			body: strings.Replace(adXML("bob@example.com"), "<EMailAddress>", "<EMailAddress>alice@example.com</EMailAddress><EMailAddress>", 1)},
		{name: "not XML", method: "POST", target: pox, body: "{\"EMailAddress\": \"bob@example.com\"}", status: 200, has: []string{poxInvalid}},
		{name: "empty POX body", method: "POST", target: pox, status: 200, has: []string{poxInvalid}},
		// Huge bodies.
		{name: "1 MB POX body", method: "POST", target: pox, body: adXML("bob@example.com") + strings.Repeat(" ", 1<<20), status: 413},
		{name: "20 KB POX body (over its own 16 KiB bound)", method: "POST", target: pox, body: adXML("bob@example.com") + strings.Repeat(" ", 20<<10), status: 413},
		{name: "1 MB body on a GET", method: "GET", target: ac("bob@example.com"), body: strings.Repeat("x", 1<<20), status: 413},
		// Echoes: nothing from the request comes back unescaped.
		{name: "script in setup page", method: "GET", target: "/?emailaddress=%3Cscript%3Ealert(1)%3C/script%3E@example.com", status: 400,
			hasNot: []string{"<script>"}},
		{name: "script in JSON protocol", method: "GET", target: "/autodiscover/autodiscover.json?Email=bob@example.com&Protocol=%3Cscript%3E", status: 400,
			hasNot: []string{"<script>"}, searches: 1},
		{name: "script in mobileconfig platform", method: "GET", target: "/mobileconfig?emailaddress=bob@example.com&platform=%3Cscript%3E", status: 400,
			hasNot: []string{"<script>"}},
		{name: "filter in mobileconfig", method: "GET", target: "/mobileconfig?emailaddress=bob)(uid=*@example.com", status: 400},
		{name: "star in mobileconfig", method: "GET", target: "/mobileconfig?emailaddress=*@example.com", status: 200, searches: 1},
		{name: "unknown domain", method: "GET", target: ac("bob@example.org"), status: 404},
		{name: "path traversal: not found, not redirected", method: "GET", target: "/mail/../../etc/passwd", status: 404, hasNot: []string{"root:", "Location"}},
		{name: "method not allowed", method: "DELETE", target: ac("bob@example.com"), status: 405},
		{name: "many parameters", method: "GET", target: ac("alice@example.com") + strings.Repeat("&x=y", 5000), status: 200, has: []string{"<username>alice</username>"}, searches: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			if tc.body == "" {
				req = httptest.NewRequest(tc.method, tc.target, nil)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			req.RemoteAddr = fmt.Sprintf("198.51.100.%d:4000", i+1)
			before := dir.searches.Load()
			start := time.Now()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			took := time.Since(start)
			if rec.Code != tc.status {
				t.Errorf("status %d; want %d: %.300s", rec.Code, tc.status, rec.Body)
			}
			var answer strings.Builder
			_ = rec.Header().Write(&answer)
			answer.Write(rec.Body.Bytes())
			for _, s := range tc.has {
				if !strings.Contains(answer.String(), s) {
					t.Errorf("answer lacks %q: %.500s", s, rec.Body)
				}
			}
			for _, s := range tc.hasNot {
				if strings.Contains(answer.String(), s) {
					t.Errorf("answer contains %q: %.500s", s, rec.Body)
				}
			}
			if n := dir.searches.Load() - before; n > int64(tc.searches) {
				t.Errorf("%d directory searches; want at most %d", n, tc.searches)
			}
			if rec.Code >= 500 {
				t.Errorf("server error %d", rec.Code)
			}
			t.Logf("%d in %v", rec.Code, took)
		})
	}
}

// A client that sends hostile input without end meets the limits: the
// unknown-address budget stops its lookups before the directory.
func TestHostileScanner(t *testing.T) {
	res, dir := newDemoResolver(t, demoDomains())
	o := DefaultLimitOptions()
	h := NewHandler(res, Options{Limits: limitsFor(t, o)})
	codes := map[int]int{}
	for n := range 1000 {
		rec := limRequest(h, "GET", fmt.Sprintf("/mail/config-v1.1.xml?emailaddress=guess%d@example.com", n), "203.0.113.9:999", nil)
		codes[rec.Code]++
	}
	t.Logf("1000 guesses from one address: %v, %d directory searches", codes, dir.searches.Load())
	if codes[200] > o.UnknownBurst+5 || codes[429] < 1000-o.Burst {
		t.Errorf("answers %v; want at most about %d lookups, then 429", codes, o.UnknownBurst)
	}
	if n := dir.searches.Load(); n > int64(o.UnknownBurst+5) {
		t.Errorf("%d directory searches for 1000 guesses; want at most about %d", n, o.UnknownBurst)
	}
}
