package protocols

import (
	"bytes"
	"context"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
)

func TestAppleMobileconfigHTTP(t *testing.T) {
	_, h := appleNewFakeServer(t, Options{})
	tests := []struct {
		name     string
		method   string
		target   string
		status   int
		filename string // Content-Disposition filename when 200
		body     string // substring of the body
	}{
		{"alice", "GET", "/mobileconfig?emailaddress=alice@example.com", 200, "alice-example.com.mobileconfig", "com.apple.eas.account"},
		{"percent-encoded @ and case", "GET", "/mobileconfig?EmailAddress=Alice%40Example.COM", 200, "alice-example.com.mobileconfig", "<string>alice</string>"},
		{"surrounding spaces", "GET", "/mobileconfig?emailaddress=%20bob@example.com%20", 200, "bob-example.com.mobileconfig", "bob.login"},
		{"mac", "GET", "/mobileconfig?emailaddress=alice@example.com&platform=mac", 200, "alice-example.com-mac.mobileconfig", "PayloadScope"},
		{"alias", "GET", "/mobileconfig?emailaddress=a.example@example.com", 200, "alice-example.com.mobileconfig", "<string>alice@example.com</string>"},
		{"unknown address: defaults", "GET", "/mobileconfig?emailaddress=nobody@example.com", 200, "nobody-example.com.mobileconfig", "<string>nobody@example.com</string>"},
		{"odd local part", "GET", "/mobileconfig?emailaddress=" + url.QueryEscape("o'neil+tag@example.com"), 200, "", "o&#39;neil+tag@example.com"},
		{"HEAD", "HEAD", "/mobileconfig?emailaddress=alice@example.com", 200, "alice-example.com.mobileconfig", ""},
		{"missing address", "GET", "/mobileconfig", 400, "", "missing emailaddress"},
		{"empty address", "GET", "/mobileconfig?emailaddress=", 400, "", "missing emailaddress"},
		{"invalid address", "GET", "/mobileconfig?emailaddress=%3Cscript%3E", 400, "", "invalid e-mail address"},
		{"address too long", "GET", "/mobileconfig?emailaddress=" + strings.Repeat("a", 300) + "@example.com", 400, "", "invalid"},
		{"not UTF-8", "GET", "/mobileconfig?emailaddress=%ff%fe@example.com", 400, "", "invalid"},
		{"bad platform", "GET", "/mobileconfig?emailaddress=alice@example.com&platform=windows", 400, "", "platform"},
		{"unknown domain", "GET", "/mobileconfig?emailaddress=alice@example.net", 404, "", "domain not served here"},
		{"directory down", "GET", "/mobileconfig?emailaddress=alice@down.example", 503, "", "directory unavailable"},
		{"nothing to put in a profile", "GET", "/mobileconfig?emailaddress=frank@example.com", 404, "", "no settings"},
		{"POST", "POST", "/mobileconfig?emailaddress=alice@example.com", 405, "", "method not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := appleGet(h, tt.method, tt.target, "example.com")
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d; body %q", rec.Code, tt.status, rec.Body.String())
			}
			if !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("body does not contain %q:\n%s", tt.body, rec.Body)
			}
			if tt.status != 200 {
				if strings.Contains(rec.Body.String(), "<script") {
					t.Error("error echoes the request")
				}
				return
			}
			hd := rec.Header()
			if hd.Get("Content-Type") != profileMIME {
				t.Errorf("Content-Type %q", hd.Get("Content-Type"))
			}
			disp, params, err := mime.ParseMediaType(hd.Get("Content-Disposition"))
			if err != nil || disp != "attachment" || (tt.filename != "" && params["filename"] != tt.filename) {
				t.Errorf("Content-Disposition %q, want attachment; filename=%s", hd.Get("Content-Disposition"), tt.filename)
			}
			if !strings.HasSuffix(params["filename"], ".mobileconfig") {
				t.Errorf("filename %q", params["filename"])
			}
			if cc := hd.Get("Cache-Control"); !strings.Contains(cc, "private") || !strings.Contains(cc, "no-store") {
				t.Errorf("Cache-Control %q: a per-user profile must not be cached", cc)
			}
			if tt.method == http.MethodHead {
				if rec.Body.Len() != 0 || hd.Get("Content-Length") == "0" {
					t.Errorf("HEAD: body %d bytes, Content-Length %s", rec.Body.Len(), hd.Get("Content-Length"))
				}
				return
			}
			appleDecodePlist(t, rec.Body.Bytes())
		})
	}
}

// TestQuirk23MobileconfigContentType: iOS installs a profile only when it
// is served as application/x-apple-aspen-config; as anything else Safari
// shows the XML as text (CLIENTS.md §6, quirk 23). Signed or not.
func TestQuirk23MobileconfigContentType(t *testing.T) {
	demo, err := WriteDemoSigning(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	signed := AppleOptions{Signing: demo.Signing}
	if err := signed.Prepare(); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string]Options{"unsigned": {}, "signed": {Apple: signed}} {
		_, h := appleNewFakeServer(t, opts)
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			rec := appleGet(h, m, "/mobileconfig?emailaddress=bob@example.com", "")
			if got := rec.Header().Get("Content-Type"); rec.Code != 200 || got != "application/x-apple-aspen-config" {
				t.Errorf("%s %s: status %d, Content-Type %q, want application/x-apple-aspen-config", name, m, rec.Code, got)
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("%s %s: X-Content-Type-Options %q", name, m, got)
			}
		}
	}
}

// TestQuirk24PendingProfile: iOS deletes a downloaded profile that is not
// installed within 8 minutes and keeps one pending at a time (quirk 24).
// So the page tells the user, and downloading again is harmless: the second
// download carries the same identifiers and UUIDs and replaces the first,
// on the device and in the "pending" slot alike.
func TestQuirk24PendingProfile(t *testing.T) {
	_, h := appleNewFakeServer(t, Options{})
	page := appleGet(h, http.MethodGet, "/?emailaddress=bob@example.com", "")
	if page.Code != 200 || !strings.Contains(page.Body.String(), "within 8 minutes") {
		t.Errorf("the setup page does not tell the user to install within 8 minutes (status %d)", page.Code)
	}
	first := appleGet(h, http.MethodGet, "/mobileconfig?emailaddress=bob@example.com", "")
	second := appleGet(h, http.MethodGet, "/mobileconfig?emailaddress=bob@example.com", "")
	if first.Code != 200 || !bytes.Equal(first.Body.Bytes(), second.Body.Bytes()) {
		t.Error("two downloads of the same profile differ")
	}
	if a, b := first.Header().Get("Content-Disposition"), second.Header().Get("Content-Disposition"); a != b {
		t.Errorf("file names differ: %q, %q", a, b)
	}
}

// TestAppleWellKnownDAV: RFC 6764 §5 redirects, by the Host header.
func TestAppleWellKnownDAV(t *testing.T) {
	_, h := appleNewFakeServer(t, Options{})
	tests := []struct {
		name, method, path, host string
		status                   int
		location                 string
	}{
		{"caldav", "GET", "/.well-known/caldav", "example.com", 301, "https://dav.example.com/dav/"},
		{"carddav", "GET", "/.well-known/carddav", "example.com", 301, "https://dav.example.com:8443/dav/"},
		{"PROPFIND as iOS sends", "PROPFIND", "/.well-known/caldav", "example.com", 301, "https://dav.example.com/dav/"},
		{"HEAD", "HEAD", "/.well-known/carddav", "example.com", 301, "https://dav.example.com:8443/dav/"},
		{"host with port, upper case", "GET", "/.well-known/caldav", "EXAMPLE.com:443", 301, "https://dav.example.com/dav/"},
		{"autoconfig host", "GET", "/.well-known/caldav", "autoconfig.example.com", 301, "https://dav.example.com/dav/"},
		{"domain without DAV", "GET", "/.well-known/caldav", "example.org", 404, ""},
		{"domain without CardDAV", "PROPFIND", "/.well-known/carddav", "example.org", 404, ""},
		{"unknown domain", "GET", "/.well-known/caldav", "example.net", 404, ""},
		{"garbage host", "GET", "/.well-known/caldav", "<script>", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := appleGet(h, tt.method, tt.path, tt.host)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d", rec.Code, tt.status)
			}
			if got := rec.Header().Get("Location"); got != tt.location {
				t.Errorf("Location %q, want %q", got, tt.location)
			}
			if tt.status == 301 && rec.Header().Get("Cache-Control") == "" {
				t.Error("no Cache-Control on the redirect (RFC 6764 §5 SHOULD)")
			}
		})
	}

	t.Run("no loop to itself", func(t *testing.T) {
		ds, err := policy.NewDomains([]policy.DomainConfig{{Name: "loop.example", Services: []policy.ServiceConfig{
			{Type: "imap", Host: "mail.loop.example"},
			{Type: "caldav", URL: "https://loop.example/.well-known/caldav"},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		h := NewHandler(&appleFakeResolver{domains: ds}, Options{})
		if rec := appleGet(h, "GET", "/.well-known/caldav", "loop.example"); rec.Code != 404 {
			t.Errorf("status %d, Location %q: want 404 rather than a redirect loop", rec.Code, rec.Header().Get("Location"))
		}
	})
}

// TestAppleEndToEnd runs the "done when" checks through the real
// stack: the embedded demo directory, ldapsource, the demo policy.
func TestAppleEndToEnd(t *testing.T) {
	res := appleStartDemoResolver(t)
	demo, err := WriteDemoSigning(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	signed := AppleOptions{Signing: demo.Signing}
	if err := signed.Prepare(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(res, Options{}))
	defer srv.Close()
	signedSrv := httptest.NewServer(NewHandler(res, Options{Apple: signed}))
	defer signedSrv.Close()
	fetch := func(base, addr string) []byte {
		t.Helper()
		resp, err := srv.Client().Get(base + "/mobileconfig?emailaddress=" + url.QueryEscape(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != profileMIME {
			t.Fatalf("%s: status %d, type %q", addr, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return b.Bytes()
	}
	const mailT, easT = "com.apple.mail.managed", "com.apple.eas.account"

	alice := applePayloads(t, appleDecodePlist(t, fetch(srv.URL, "alice@example.com")))
	if m := alice[mailT]; m == nil || m["EmailAccountType"] != "EmailTypeIMAP" || m["IncomingMailServerUsername"] != "alice" || m["EmailAccountName"] != "Alice Example" {
		t.Errorf("alice's mail payload: %v", m)
	}
	if alice[easT] == nil || alice[easT]["UserName"] != "alice" {
		t.Errorf("alice has no EAS payload for login alice: %v", alice[easT])
	}

	bob := applePayloads(t, appleDecodePlist(t, fetch(srv.URL, "bob@example.com")))
	if _, ok := bob[easT]; ok {
		t.Error("bob, who may not use ActiveSync, gets an EAS payload")
	}
	if m := bob[mailT]; m == nil || m["EmailAccountType"] != "EmailTypeIMAP" || m["IncomingMailServerUsername"] != "bob.login" {
		t.Errorf("bob's mail payload: %v", m)
	}

	dave := applePayloads(t, appleDecodePlist(t, fetch(srv.URL, "dave@example.com")))
	if m := dave[mailT]; m == nil || m["IncomingMailServerHostName"] != "mail2.example.com" || m["EmailAccountName"] != `Dave <Ops> & "Smith" *) Über` {
		t.Errorf("dave's mail payload: %v", m)
	}

	// carol is disabled: the same answer as an address nobody has.
	carol := fetch(srv.URL, "carol@example.com")
	d, _ := res.Domain(context.Background(), "example.com")
	want, err := renderProfile(d.DefaultAccount(policy.Address{Local: "carol", Domain: "example.com"}, "carol@example.com"), profileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(carol, want) {
		t.Errorf("disabled carol's profile differs from the domain defaults:\n%s", carol)
	}

	// Two downloads: identical, UUIDs included (the cache is bypassed by
	// a fresh resolver for the second).
	fresh := httptest.NewServer(NewHandler(appleStartDemoResolver(t), Options{}))
	defer fresh.Close()
	again := fetch(fresh.URL, "alice@example.com")
	if !bytes.Equal(fetch(srv.URL, "alice@example.com"), again) {
		t.Error("two downloads of alice's profile differ")
	}

	der := fetch(signedSrv.URL, "alice@example.com")
	content, err := appleOpensslVerify(t, der, demo.CAFile)
	if err != nil {
		t.Fatalf("openssl cms -verify: %v", err)
	}
	if !bytes.Equal(content, fetch(srv.URL, "alice@example.com")) {
		t.Error("the signed profile's content is not the unsigned profile")
	}
}
