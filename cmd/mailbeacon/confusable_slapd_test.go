package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// aliceLookAlikes are addresses that Unicode case mapping, case folding or
// normalisation turn into alice@example.com, or that only look like it.
var aliceLookAlikes = []string{
	"al\u0130ce@example.com", // U+0130 capital I with dot: lower-cases to i
	"AL\u0130CE@EXAMPLE.COM",
	"al\u0131ce@example.com",                          // U+0131 dotless i
	"ali\u0307ce@example.com",                         // i + combining dot above (full case folding of U+0130)
	"\uff41lice@example.com",                          // fullwidth a (NFKC: a)
	"\uff21\uff2c\uff29\uff23\uff25@example.com",      // fullwidth ALICE
	"a\u0301lice@example.com",                         // a + combining acute
	"\u00e1lice@example.com",                          // precomposed a acute
	"al\u034fice@example.com",                         // combining grapheme joiner (default ignorable)
	"\u0430lice@example.com",                          // Cyrillic a
	"\u0430l\u0456\u0441\u0435@example.com",           // all Cyrillic
	"al\u0130ce@ex\u0430mple.com",                     // and a look-alike domain (not configured)
	"alic\u0435@example.com",                          // Cyrillic e
	"alice\u00df@example.com",                         // sharp s
	"\uff41\uff4c\uff49\uff43\uff45\uff20example.com", // fullwidth @: no address
}

// jorgLDIF is a user whose uid is not ASCII.
const jorgLDIF = `dn: uid=jörg,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: jörg
cn: Jörg Example
sn: Example
displayName: Jörg Example
mail: joerg@example.com
accountStatus: active
enabledService: mail
enabledService: imapsecured
`

// confusableEndpoints are the per-user answers, with the address escaped
// as a client sends it.
var confusableEndpoints = []struct {
	name string
	req  func(addr string) *http.Request
}{
	{"autoconfig", func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress="+url.QueryEscape(addr), nil)
	}},
	{"autodiscover outlook", func(addr string) *http.Request { return poxRequest(addr, poxOutlook) }},
	{"autodiscover mobilesync", func(addr string) *http.Request { return poxRequest(addr, poxMobilesync) }},
	{"autodiscover v2", func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/autodiscover/autodiscover.json/v1.0/"+url.PathEscape(addr)+"?Protocol=ActiveSync", nil)
	}},
	{"apple profile", func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/mobileconfig?emailaddress="+url.QueryEscape(addr), nil)
	}},
	{"setup page", func(addr string) *http.Request {
		return httptest.NewRequest("GET", "/?emailaddress="+url.QueryEscape(addr), nil)
	}},
}

// TestConfusableAddressesSlapd asks every endpoint for look-alikes of
// alice against the demo directory in slapd, with the preset's filter
// (mail, shadowAddress: IA5, which slapd does not fold) and with one on
// uid, whose caseIgnoreMatch folds U+0130 and fullwidth letters into
// ASCII: no answer shows alice's login, display name or profile file
// name, and each distinct address costs the directory one search.
func TestConfusableAddressesSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(jorgLDIF))
	for _, filter := range []string{"", "(&(objectClass=mailUser)(|(mail={email})(uid={local})))"} {
		t.Run("filter "+filter, func(t *testing.T) {
			o := slapdOptions{extra: "limits:\n  requests_per_second: 0\n  unknown_per_minute: 0\n"}
			if filter != "" {
				o.ldapExtra = "  filter: \"" + filter + "\"\n"
			}
			a := buildText(t, slapdConfigText(t, srv, o))
			h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))

			// Control: alice herself shows her login and name.
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, poxRequest("alice@example.com", poxOutlook))
			if body := rec.Body.String(); !strings.Contains(body, "Alice Example") || !strings.Contains(body, ">alice<") {
				t.Fatalf("alice's own answer lacks her name or login:\n%s", body)
			}

			// A non-ASCII local part reaches the directory intact: by uid,
			// jörg is found (his mail attribute is IA5, so ASCII).
			if filter != "" {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, poxRequest("J\u00f6rg@example.com", poxOutlook))
				if body := rec.Body.String(); !strings.Contains(body, "J\u00f6rg Example") || !strings.Contains(body, ">j\u00f6rg<") {
					t.Errorf("jörg's answer lacks his name or login:\n%s", body)
				}
			}

			before := srv.SearchCount()
			distinct := map[string]bool{}
			for _, addr := range aliceLookAlikes {
				if p, err := policy.ParseAddress(addr); err == nil && p.Domain == "example.com" {
					distinct[p.String()] = true
				}
				for _, ep := range confusableEndpoints {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, ep.req(addr))
					body := rec.Body.String()
					cd := rec.Header().Get("Content-Disposition")
					if rec.Code >= 500 || strings.Contains(body, "Alice Example") || strings.Contains(body, ">alice<") ||
						strings.Contains(body, "alice@example.com") || strings.Contains(cd, "alice-example.com") {
						t.Errorf("%s %q: %d, %s, alice's account shows:\n%s", ep.name, addr, rec.Code, cd, body)
					}
				}
			}
			searches := srv.SearchCount() - before
			t.Logf("%d look-alikes (%d distinct addresses of example.com) x %d endpoints: %d searches reached slapd",
				len(aliceLookAlikes), len(distinct), len(confusableEndpoints), searches)
			if searches != len(distinct) {
				t.Errorf("%d searches, want %d: one per distinct address", searches, len(distinct))
			}
		})
	}
}

// TestConfusableBurstSlapd sends 300 requests at once, for 30 fresh
// look-alikes of alice found by uid (which slapd folds): none gets her
// account, and concurrent requests for one address share one search.
func TestConfusableBurstSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	a := buildText(t, slapdConfigText(t, srv, slapdOptions{
		ldapExtra: "  filter: \"(&(objectClass=mailUser)(|(mail={email})(uid={local})))\"\n",
		extra:     "limits:\n  requests_per_second: 0\n  unknown_per_minute: 0\n",
	}))
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	// Fullwidth letters anywhere, and U+0130 for the i: each folds to alice.
	const distinct = 30
	addrs := make([]string, distinct)
	for i := range addrs {
		b := []rune("alice")
		for j := range b {
			if (i+1)>>j&1 == 1 { // never none: 1 <= i+1 < 32
				b[j] += 0xff41 - 'a'
			}
		}
		if i%2 == 1 && b[2] == 'i' {
			b[2] = '\u0130'
		}
		addrs[i] = string(b) + "@example.com"
	}
	before := srv.SearchCount()
	var leaks atomic.Int32
	ldaptest.Together(10*distinct, func(i int) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, confusableEndpoints[i%2].req(addrs[i%distinct]))
		if strings.Contains(rec.Body.String(), "Alice Example") || strings.Contains(rec.Body.String(), ">alice<") {
			leaks.Add(1)
		}
	})
	searches := srv.SearchCount() - before
	t.Logf("%d requests for %d look-alikes at once: %d got alice's account, %d searches reached slapd", 10*distinct, distinct, leaks.Load(), searches)
	if leaks.Load() != 0 || searches > distinct {
		t.Errorf("%d answers showed alice's account; %d searches, want at most %d", leaks.Load(), searches, distinct)
	}
}
