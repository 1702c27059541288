package main

// What unauthenticated answers reveal, per policy.privacy, through every
// endpoint, against a real slapd: with strict, alice's (also asked by her
// alias), carol's (disabled) and nobody's answers differ only in the login
// name, as README.md says; with require_auth, Autodiscover says nothing of
// the user before the password.

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// privacyEndpoints are the unauthenticated per-user answers.
var privacyEndpoints = []struct {
	name string
	req  func(addr string) *http.Request
}{
	{"autoconfig", func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress="+addr, nil)
	}},
	{"autodiscover outlook", func(addr string) *http.Request { return poxRequest(addr, poxOutlook) }},
	{"autodiscover mobilesync", func(addr string) *http.Request { return poxRequest(addr, poxMobilesync) }},
	{"autodiscover v2 ActiveSync", func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/autodiscover/autodiscover.json/v1.0/"+addr+"?Protocol=ActiveSync", nil)
	}},
	{"autodiscover v2 IMAP", func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/autodiscover/autodiscover.json?Email="+addr+"&Protocol=IMAP", nil)
	}},
	{"apple profile", func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/mobileconfig?emailaddress="+addr, nil)
	}},
	{"setup page", func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/?emailaddress="+addr, nil)
	}},
}

const (
	poxOutlook    = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
	poxMobilesync = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)

func poxRequest(addr, schema string) *http.Request {
	reqNS := strings.Replace(strings.Replace(schema, "responseschema", "requestschema", 1), "/2006a", "/2006", 1)
	body := `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="` + reqNS + `"><Request><EMailAddress>` + addr +
		`</EMailAddress><AcceptableResponseSchema>` + schema + `</AcceptableResponseSchema></Request></Autodiscover>`
	// Over HTTPS: Autodiscover redirects plain HTTP.
	r := httptest.NewRequest("POST", "https://autodiscover.example.com/autodiscover/autodiscover.xml", strings.NewReader(body))
	r.Header.Set("Content-Type", "text/xml")
	return r
}

// privacyUsers: the address asked and the login the directory gives it.
var privacyUsers = []struct{ addr, login string }{
	{"alice@example.com", "alice"},
	{"a.example@example.com", "alice"}, // an alias of alice
	{"carol@example.com", "carol@example.com"},
	{"nobody@example.com", "nobody@example.com"},
}

// profileIDs are the per-address parts of a profile: UUIDs and the
// identifier label made of the local part.
var profileIDs = regexp.MustCompile(`[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}`)

// answer fetches one endpoint's answer, status and headers included, and
// returns it as it is and address-neutral: the address asked, the login
// and the local part (as profiles' identifiers spell it) become X, and
// profile UUIDs UUID.
func answer(t *testing.T, h http.Handler, req *http.Request, addr, login string) (raw, neutral string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	var b strings.Builder
	b.WriteString(res.Status + "\n")
	for _, k := range []string{"Content-Type", "Content-Disposition", "Cache-Control", "WWW-Authenticate"} {
		b.WriteString(k + ": " + res.Header.Get(k) + "\n")
	}
	b.Write(body)
	raw = b.String()
	local, _, _ := strings.Cut(addr, "@")
	s := strings.ReplaceAll(raw, addr, "X")
	s = regexp.MustCompile(`\b`+regexp.QuoteMeta(login)+`\b`).ReplaceAllString(s, "X")
	s = regexp.MustCompile(`\b`+regexp.QuoteMeta(local)+`\b`).ReplaceAllString(s, "X")
	s = regexp.MustCompile(`\b`+regexp.QuoteMeta(strings.ReplaceAll(local, ".", "-"))+`(-[0-9a-f]{8})?\b`).ReplaceAllString(s, "X")
	return raw, profileIDs.ReplaceAllString(s, "UUID")
}

func TestPrivacyModesSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	for _, mode := range []string{"standard", "strict"} {
		t.Run(mode, func(t *testing.T) {
			cfg := slapdConfig(t, srv, false)
			cfg.Policy.Privacy = mode
			a, err := build(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer a.source.Close()
			h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
			for _, ep := range privacyEndpoints {
				t.Run(ep.name, func(t *testing.T) {
					got, raw := map[string]string{}, map[string]string{}
					for _, u := range privacyUsers {
						r, n := answer(t, h, ep.req(u.addr), u.addr, u.login)
						got[u.addr], raw[u.addr] = n, r
					}
					// Where the display name and the primary address would show.
					personal := strings.HasPrefix(ep.name, "autodiscover ") && !strings.Contains(ep.name, "v2") || ep.name == "apple profile"
					nobody := got["nobody@example.com"]
					if !strings.HasPrefix(nobody, "200 OK") && !strings.Contains(ep.name, "v2") {
						t.Fatalf("nobody: %s", nobody)
					}
					// Disabled and unknown are the same answer in both modes.
					if got["carol@example.com"] != nobody {
						t.Errorf("carol's answer differs from nobody's:\n%s\n---\n%s", got["carol@example.com"], nobody)
					}
					for _, u := range privacyUsers[:2] {
						// alice may use every service: with the login made
						// neutral, only standard's display name and primary
						// address can tell her from nobody.
						same := got[u.addr] == nobody
						if mode == "strict" && !same {
							t.Errorf("strict: %s's answer differs from nobody's beyond the login:\n%s\n---\n%s", u.addr, got[u.addr], nobody)
						}
						if mode == "strict" && strings.Contains(raw[u.addr], "Alice") {
							t.Errorf("strict: %s's answer carries the display name", u.addr)
						}
						if mode == "standard" && personal && !strings.Contains(raw[u.addr], "Alice Example") {
							t.Errorf("standard: %s's answer lacks the display name:\n%s", u.addr, raw[u.addr])
						}
					}
					alias := raw["a.example@example.com"]
					if mode == "standard" && personal && !strings.Contains(alias, "alice@example.com") {
						t.Errorf("standard: the alias's answer lacks the primary address:\n%s", alias)
					}
					if mode == "strict" && strings.Contains(alias, "alice@example.com") {
						t.Errorf("strict: the alias's answer names the primary address:\n%s", alias)
					}
				})
			}
		})
	}
}

// With autodiscover.require_auth and strict privacy, nothing of the user
// leaves before the password: no password, a wrong one, a disabled or an
// unknown address get the same 401; the right one gets the whole account.
func TestPrivacyRequireAuthSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	cfg := slapdConfig(t, srv, false)
	cfg.Policy.Privacy = "strict"
	cfg.Autodiscover.RequireAuth = true
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.source.Close()
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	for _, schema := range []string{poxOutlook, poxMobilesync} {
		var first string
		for _, u := range privacyUsers {
			for _, pw := range []string{"", "wrong", ldaptest.UserPassword} {
				if pw == ldaptest.UserPassword && strings.HasPrefix(u.addr, "a") {
					continue // alice's right password: below
				}
				req := poxRequest(u.addr, schema)
				if pw != "" {
					req.SetBasicAuth(u.addr, pw)
				}
				_, got := answer(t, h, req, u.addr, u.login)
				if first == "" {
					first = got
					if !strings.HasPrefix(got, "401") {
						t.Fatalf("%s without a password: %s", u.addr, got)
					}
				}
				if got != first {
					t.Errorf("%s, password %q: the answer differs:\n%s\n---\n%s", u.addr, pw, got, first)
				}
			}
		}
		req := poxRequest("a.example@example.com", schema)
		req.SetBasicAuth("a.example@example.com", ldaptest.UserPassword)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || !bytes.Contains(rec.Body.Bytes(), []byte("Alice Example")) || !bytes.Contains(rec.Body.Bytes(), []byte("alice@example.com")) {
			t.Errorf("alice with her password: %d %s", rec.Code, rec.Body)
		}
	}
}

// benchSlapdApp builds the demo configuration against a throwaway slapd
// with per-client limits off and extra YAML (sections other than policy,
// domains, ldap and limits), under policy.privacy: strict.
func benchSlapdApp(b *testing.B, extra string) http.Handler {
	a := benchSlapdBuild(b, extra)
	return protocols.NewHandler(a.resolver, a.handlerOptions(nil))
}

func benchSlapdBuild(b *testing.B, extra string) *app {
	text := slapdConfigText(b, ldaptest.Slapd(b), slapdOptions{
		extra: "limits:\n  requests_per_second: 0\n  unknown_per_minute: 0\n" + extra,
	})
	return buildText(b, strings.Replace(text, "policy:\n", "policy:\n  privacy: strict\n", 1))
}

// interleave runs do for each address in turn, b.N times in all after a
// warm-up of 50 rounds, so that load on the machine weighs on each alike,
// and reports each one's mean and the largest gap between them.
func interleave(b *testing.B, names, addrs []string, do func(addr string)) {
	for range 50 {
		for _, a := range addrs {
			do(a)
		}
	}
	total := make([]time.Duration, len(addrs))
	n := 0
	b.ResetTimer()
	for b.Loop() {
		k := n % len(addrs)
		start := time.Now()
		do(addrs[k])
		total[k] += time.Since(start)
		n++
	}
	b.StopTimer()
	means := make([]float64, len(addrs))
	for i := range addrs {
		count := (n - i + len(addrs) - 1) / len(addrs)
		means[i] = float64(total[i].Microseconds()) / float64(max(count, 1))
		b.ReportMetric(means[i], names[i]+"-µs/op")
	}
	lo, hi := slices.Min(means), slices.Max(means)
	b.ReportMetric(100*(hi-lo)/lo, "%-gap")
}

// BenchmarkAuthRefusalSlapd: with autodiscover.require_auth, how long a
// refusal takes for a wrong password of an enabled account (a real bind
// the directory refuses), a wrong password refused before (no bind: the
// per-account bound answers from memory), an unknown address and a
// disabled one (no bind either), against a real slapd, through the POX
// handler. Each is answered at autodiscover.refusal_time (here 20ms) after
// it began; TestTimingOracleRefusalSlapd compares their percentiles.
//
//	go test ./cmd/mailbeacon -run '^$' -bench AuthRefusalSlapd -benchtime 1000x
func BenchmarkAuthRefusalSlapd(b *testing.B) {
	a := benchSlapdBuild(b, "autodiscover:\n  require_auth: true\n  auth_cache_ttl: 0s\n")
	// So that alice's new wrong passwords keep binding, her account is
	// never paused here: no configuration allows this.
	a.resolver.SetBindLockout(policy.LockoutConfig{Failures: math.MaxInt32, Pause: time.Nanosecond, RefusalTime: 20 * time.Millisecond})
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	n := 0
	interleave(b, []string{"wrong-password", "repeated", "unknown", "disabled"},
		[]string{"alice@example.com", "bob@example.com", "nobody@example.com", "carol@example.com"}, func(addr string) {
			req := poxRequest(addr, poxOutlook)
			pw := "not-the-password"
			if addr == "alice@example.com" {
				n++
				pw = "not-the-password-" + strconv.Itoa(n)
			}
			req.SetBasicAuth(addr, pw)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				b.Fatalf("%s: %d", addr, rec.Code)
			}
		})
}

// BenchmarkColdLookupSlapd: how long an unauthenticated autoconfig answer
// takes when the address is not cached (every lookup searches: the cache
// keeps nothing), for an enabled account, a disabled one and an unknown
// address, against a real slapd.
//
//	go test ./cmd/mailbeacon -run '^$' -bench ColdLookupSlapd -benchtime 3000x
func BenchmarkColdLookupSlapd(b *testing.B) {
	h := benchSlapdApp(b, "cache:\n  ttl: 1ns\n  negative_ttl: 1ns\n  stale_for: 0s\n")
	interleave(b, []string{"enabled", "disabled", "unknown"},
		[]string{"alice@example.com", "carol@example.com", "nobody@example.com"}, func(addr string) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress="+addr, nil))
			if rec.Code != http.StatusOK {
				b.Fatalf("%s: %d", addr, rec.Code)
			}
		})
}
