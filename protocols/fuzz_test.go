package protocols

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// Fuzz targets for the request parsers of this package that have none
// elsewhere: query strings, the Autodiscover v2 JSON path, the forwarding
// headers, and whole requests through the handler. FuzzParsePOXRequest
// (autodiscover_test.go) and FuzzSetupPage (setup_page_test.go) cover the
// POX body and the setup page; FuzzParseAddress and FuzzPlainASCIIDomain
// (policy) the address. `make fuzz` runs each for FUZZTIME.

// FuzzQueryValue: queryValue finds what url.ParseQuery finds: the first
// value of the exact name if there is one, else the value of one of the
// names that differ only in case (url.Values cannot say which came first).
func FuzzQueryValue(f *testing.F) {
	for _, s := range []string{"emailaddress=bob%40example.com", "EmailAddress=a@b.c&emailaddress=x@y.z",
		"emailAddress=1&EMAILADDRESS=2", "emailaddress=%zz&emailaddress=ok", "a=1;emailaddress=2", "emailaddress",
		"emailaddress=&emailaddress=x", "=x&&emailaddress=a+b", "%65mailaddress=x", "emailaddress=%00"} {
		f.Add(s, "emailaddress")
	}
	f.Add("Email=x&Protocol=ActiveSync", "Protocol")
	f.Fuzz(func(t *testing.T, raw, name string) {
		r := &http.Request{URL: &url.URL{RawQuery: raw}}
		got := queryValue(r, name)
		q, _ := url.ParseQuery(raw)
		if v, ok := q[name]; ok {
			if got != v[0] {
				t.Fatalf("queryValue(%q, %q) = %q; ParseQuery's first value is %q", raw, name, got, v[0])
			}
			return
		}
		var candidates []string
		for k, v := range q {
			if strings.EqualFold(k, name) {
				candidates = append(candidates, v[0])
			}
		}
		if len(candidates) == 0 {
			if got != "" {
				t.Fatalf("queryValue(%q, %q) = %q; ParseQuery has no such name", raw, name, got)
			}
			return
		}
		for _, c := range candidates {
			if got == c {
				return
			}
		}
		t.Fatalf("queryValue(%q, %q) = %q; want one of %q", raw, name, got, candidates)
	})
}

// FuzzJSONPathEmail: the v2 path matcher accepts the two paths in any
// case, and an address from the /v1.0/ form has no slash and is what
// follows the prefix.
func FuzzJSONPathEmail(f *testing.F) {
	for _, s := range []string{"/autodiscover/autodiscover.json", "/AutoDiscover/AutoDiscover.json/v1.0/bob@example.com",
		"/autodiscover/autodiscover.json/v1.0/", "/autodiscover/autodiscover.json/v1.0/a/b", "/autodiscover/autodiscover.jsonx",
		"/autodiscover/autodiscover.json/v1.0/\x00", "/autodiscover/autodiscover.json/V1.0/x@y.z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		email, ok := jsonPathEmail(p)
		if !ok {
			if email != "" {
				t.Fatalf("jsonPathEmail(%q) = %q without a match", p, email)
			}
			return
		}
		switch {
		case email == "" && !strings.EqualFold(p, jsonPath):
			t.Fatalf("jsonPathEmail(%q) matched without an address", p)
		case email != "" && (strings.Contains(email, "/") || !strings.EqualFold(p, jsonPathV1Pref+email)):
			t.Fatalf("jsonPathEmail(%q) = %q", p, email)
		}
	})
}

// FuzzClientIP: whatever the forwarding headers say, the client is the
// peer or an address written in the header, never a trusted proxy unless
// every hop is one, and parsing never panics.
func FuzzClientIP(f *testing.F) {
	for _, s := range []string{"198.51.100.9", "1.1.1.1, 10.0.0.2", "[2001:db8::1]:80, 10.0.0.3", "for=198.51.100.9;proto=https",
		`for="[2001:db8:cafe::17]:4711", for=10.0.0.5`, "unknown", "for=_hidden", ",,,", "\"", "[", "for=", "1.2.3.4:99999"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	xff := limitsFor(f, LimitOptions{TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48"}})
	fwd := limitsFor(f, LimitOptions{TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48"}, ClientIPHeader: "Forwarded"})
	f.Fuzz(func(t *testing.T, header string, forwarded bool) {
		opts, name := xff, "X-Forwarded-For"
		if forwarded {
			opts, name = fwd, "Forwarded"
		}
		l := &limiter{opts: opts}
		r := &http.Request{RemoteAddr: "10.0.0.1:4000", Header: http.Header{name: {header}}}
		ip, ok := l.clientIP(r)
		if !ok || !ip.IsValid() {
			t.Fatalf("clientIP with %s: %q = %v, %v", name, header, ip, ok)
		}
		if ip == netip.MustParseAddr("10.0.0.1") {
			return
		}
		if !strings.Contains(header, ip.String()) && !strings.Contains(strings.ToLower(header), ip.String()) {
			// An address may be written differently (e.g. ::ffff:1.2.3.4
			// or 2001:DB8::1): it must at least parse from some token.
			found := false
			for _, tok := range strings.FieldsFunc(header, func(r rune) bool { return strings.ContainsRune(",; =\"", r) }) {
				if a, ok := parseHop(tok); ok && a == ip {
					found = true
				}
			}
			if !found {
				t.Fatalf("clientIP with %s: %q = %v, which the header does not name", name, header, ip)
			}
		}
	})
}

// FuzzHandler sends arbitrary requests through the whole handler (demo
// policy, in-memory directory, default limits): no panic, no 5xx, no
// request bytes echoed into an XML or HTML answer unescaped.
func FuzzHandler(f *testing.F) {
	for _, s := range []struct{ method, target, body string }{
		{"GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", ""},
		{"GET", "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=%3Cscript%3E@example.com", ""},
		{"POST", "/autodiscover/autodiscover.xml", adXML("alice@example.com")},
		{"POST", "/AutoDiscover/AutoDiscover.xml", `<!DOCTYPE x [<!ENTITY a "aaaa">]><Autodiscover/>`},
		{"GET", "/autodiscover/autodiscover.json/v1.0/bob@example.com?Protocol=ActiveSync", ""},
		{"GET", "/autodiscover/autodiscover.json?Email=x@example.com&Protocol=<b>", ""},
		{"GET", "/mobileconfig?emailaddress=dave@example.com&platform=mac", ""},
		{"GET", "/?emailaddress=%22%3E%3Cimg%3E@example.com", ""},
		{"PROPFIND", "/.well-known/caldav", ""},
		{"GET", "/mail/config-v1.1.xml?emailaddress=a@b.c&emailaddress=%00", ""},
	} {
		f.Add(s.method, s.target, s.body)
	}
	res, _ := newDemoResolver(f, demoDomains())
	h := NewHandler(res, Options{Limits: limitsFor(f, LimitOptions{RequestsPerSecond: 1e9, Burst: 1e9, UnknownPerMinute: 1e9, UnknownBurst: 1e9})})
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if !validMethod(method) || target == "" || target[0] != '/' || strings.ContainsAny(target, " \r\n\x00#") {
			return // not something net/http would hand to a handler
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/", strings.NewReader(body))
		req.Method, req.URL, req.RequestURI = method, u, target
		req.Host = "autodiscover.example.com"
		req.RemoteAddr = "192.0.2.7:1234"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %q: status %d", method, target, rec.Code)
		}
		// No answer of this server holds these: they can only come from
		// the request.
		out := bytes.ToLower(rec.Body.Bytes())
		for _, bad := range []string{"<script", "<img", "<b>", "\x00"} {
			if bytes.Contains(out, []byte(bad)) {
				t.Fatalf("%s %q: answer echoes %q: %.300s", method, target, bad, out)
			}
		}
	})
}

func validMethod(m string) bool {
	if m == "" || len(m) > 20 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}
