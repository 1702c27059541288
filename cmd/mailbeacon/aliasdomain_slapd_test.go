package main

// Alias domains of an iRedMail directory, through `serve` over HTTP: an
// address of the alias domain is the primary domain's user, with that
// user's services, display name and login.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// aliasDomainLDIF adds c7.test, with alias domain alias7.test, to
// ldaptest.HostedLDIF: u9 without POP3 and ActiveSync, u10 with them.
const aliasDomainLDIF = `
dn: domainName=c7.test,o=domains,dc=example,dc=com
objectClass: mailDomain
domainName: c7.test
domainAliasName: alias7.test
cn: C7 Mail
accountStatus: active
mtaTransport: dovecot

dn: uid=u9,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: u9
cn: u9
sn: Nine
displayName: U Nine
mail: u9@c7.test
accountStatus: active
enabledService: mail
enabledService: imapsecured
enabledService: smtpsecured

dn: uid=u10,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: u10
cn: u10
sn: Ten
displayName: U Ten
mail: u10@c7.test
accountStatus: active
enabledService: mail
enabledService: imapsecured
enabledService: pop3secured
enabledService: smtpsecured
enabledService: activesync
`

// aliasClient asks a running serve.
type aliasClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (a aliasClient) do(method, path, body string) (int, string, http.Header) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func (a aliasClient) autoconfig(addr string) (int, string) {
	code, body, _ := a.do("GET", "/mail/config-v1.1.xml?emailaddress="+addr, "")
	return code, body
}

func (a aliasClient) pox(addr string) (int, string) {
	code, body, _ := a.do("POST", "/autodiscover/autodiscover.xml", adXMLBody(addr))
	return code, body
}

func (a aliasClient) v2(addr, proto string) (int, string) {
	code, body, _ := a.do("GET", "/autodiscover/autodiscover.json/v1.0/"+addr+"?Protocol="+proto, "")
	return code, body
}

// checkAliasAnswers asserts that u9 and u10 of alias7.test get exactly what
// they get under c7.test: autoconfig, Autodiscover POX and v2 JSON differ
// only where the asked address shows (alias7.test for c7.test), and the
// Apple profile is named after the asked address.
func checkAliasAnswers(t *testing.T, a aliasClient) {
	t.Helper()
	asPrimary := func(s string) string { return strings.ReplaceAll(s, "alias7.test", "c7.test") }
	for _, u := range []struct {
		local       string
		pop3, eas   bool
		displayName string
	}{
		{"u9", false, false, "U Nine"},
		{"u10", true, true, "U Ten"},
	} {
		alias, primary := u.local+"@alias7.test", u.local+"@c7.test"

		ac, ab := a.autoconfig(alias)
		pc, pb := a.autoconfig(primary)
		if ac != 200 || pc != 200 || asPrimary(ab) != pb || ab == pb {
			t.Errorf("autoconfig %s: %d, %s: %d; the same but for the asked domain?\n%s\n%s", alias, ac, primary, pc, ab, pb)
		}
		if strings.Contains(ab, `type="pop3"`) != u.pop3 || !strings.Contains(ab, "<username>"+u.local+"</username>") ||
			strings.Contains(ab, "<username>"+alias) {
			t.Errorf("autoconfig %s: pop3 %v, login %s wanted:\n%s", alias, u.pop3, u.local, ab)
		}

		ac, ab = a.pox(alias)
		pc, pb = a.pox(primary)
		if ac != 200 || pc != 200 || asPrimary(ab) != pb {
			t.Errorf("Autodiscover POX %s: %d, %s: %d; the same but for the asked domain?\n%s\n%s", alias, ac, primary, pc, ab, pb)
		}
		if strings.Contains(ab, "<Type>POP3</Type>") != u.pop3 || !strings.Contains(ab, "<DisplayName>"+u.displayName+"</DisplayName>") ||
			!strings.Contains(ab, "<LoginName>"+u.local+"</LoginName>") {
			t.Errorf("Autodiscover POX %s: pop3 %v, display name %q, login %s wanted:\n%s", alias, u.pop3, u.displayName, u.local, ab)
		}

		ac, ab = a.v2(alias, "ActiveSync")
		pc, pb = a.v2(primary, "ActiveSync")
		want := 400
		if u.eas {
			want = 200
		}
		if ac != want || pc != want || ab != pb {
			t.Errorf("v2 ActiveSync %s: %d %s, %s: %d %s; want %d for both, the same", alias, ac, ab, primary, pc, pb, want)
		}
		var v2 struct{ Url string }
		if err := json.Unmarshal([]byte(ab), &v2); u.eas && (err != nil || v2.Url != "https://mail.c7.test/Microsoft-Server-ActiveSync") {
			t.Errorf("v2 ActiveSync %s: %s", alias, ab)
		}
		ac, ab = a.v2(alias, "AutodiscoverV1")
		pc, pb = a.v2(primary, "AutodiscoverV1")
		if ac != 200 || pc != 200 || asPrimary(ab) != pb {
			t.Errorf("v2 AutodiscoverV1 %s: %d %s, %s: %d %s", alias, ac, ab, primary, pc, pb)
		}

		code, body, h := a.do("GET", "/mobileconfig?emailaddress="+alias, "")
		if code != 200 || !strings.Contains(h.Get("Content-Disposition"), u.local+"-alias7.test.mobileconfig") ||
			strings.Contains(body, "pop3") && !u.pop3 {
			t.Errorf("profile %s: %d %s", alias, code, h.Get("Content-Disposition"))
		}
	}
}

// iRedMail: u9@alias7.test gets u9@c7.test's services and login over
// HTTP, for one search like any other address; so after a reload, under
// hundreds of concurrent requests, and after a restart. The unknown-
// address budget pays for an unknown alias address's one search as for
// any other.
func TestAliasDomainServeSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF+aliasDomainLDIF))
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	text := hostedConfigText(t, srv, time.Minute, time.Minute) + `
server:
  listen: 127.0.0.1:0
limits:
  max_per_client: 1000
  max_concurrent: 1000
`
	writeFile(t, cfgFile, text+"  unknown_per_minute: 1000\n  unknown_burst: 1000\n")
	s := startServe(t, []string{"--config", cfgFile})
	a := aliasClient{t: t, base: s.addrs["server.listen"], c: &http.Client{Timeout: 10 * time.Second}}

	// What an alias address costs the directory: the alias domain's entry
	// once, then one search per address and TTL, as any address.
	before := srv.SearchCount()
	if code, body := a.autoconfig("u9@alias7.test"); code != 200 || strings.Contains(body, `type="pop3"`) {
		t.Fatalf("u9@alias7.test: %d\n%s", code, body)
	}
	first := srv.SearchCount() - before
	before = srv.SearchCount()
	for range 5 {
		a.autoconfig("u9@alias7.test")
	}
	again := srv.SearchCount() - before
	before = srv.SearchCount()
	if code, _ := a.autoconfig("u9@c7.test"); code != 200 {
		t.Fatalf("u9@c7.test: %d", code)
	}
	primary := srv.SearchCount() - before
	t.Logf("searches: first u9@alias7.test %d (domain + user), 5 more %d, first u9@c7.test %d (domain + user)", first, again, primary)
	if first != 2 || again != 0 || primary != 2 {
		t.Errorf("searches: first alias request %d, repeated %d, primary %d; want 2, 0, 2", first, again, primary)
	}

	checkAliasAnswers(t, a)

	s.stop()
	s = startServe(t, []string{"--config", cfgFile})
	a.base = s.addrs["server.listen"]
	// After a restart, hundreds at once: one search for the alias domain,
	// one per address.
	before = srv.SearchCount()
	addrs := []string{"u9@alias7.test", "u10@alias7.test", "U10@Alias7.Test"}
	var mu sync.Mutex
	bad := map[string]int{}
	ldaptest.Together(200, func(i int) {
		addr := addrs[i%len(addrs)]
		code, body := a.autoconfig(addr)
		if code != 200 || strings.Contains(body, `type="pop3"`) == strings.HasPrefix(addr, "u9") {
			mu.Lock()
			bad[addr]++
			mu.Unlock()
		}
	})
	together := srv.SearchCount() - before
	t.Logf("after a restart, 200 concurrent requests for u9 and u10 of alias7.test: %d searches", together)
	if len(bad) != 0 || together != 3 {
		t.Errorf("concurrent: wrong answers %v, %d searches, want 3 (alias7.test, u9, u10)", bad, together)
	}

	checkAliasAnswers(t, a)

	// A reload to a small unknown-address budget: an unknown alias
	// address costs one token and one search, as any unknown address;
	// once the burst is spent, 429 and no search.
	writeFile(t, cfgFile, text+"  unknown_per_minute: 1\n  unknown_burst: 3\n")
	touchLater(t, cfgFile)
	s.hup()
	s.waitLog("configuration reloaded", 1)
	checkAliasAnswers(t, a)
	before = srv.SearchCount()
	var codes []int
	for i := range 6 {
		code, _ := a.autoconfig(fmt.Sprintf("nobody%d@alias7.test", i))
		codes = append(codes, code)
	}
	unknown := srv.SearchCount() - before
	t.Logf("6 unknown alias addresses, unknown_burst 3: answers %v, %d searches", codes, unknown)
	if fmt.Sprint(codes) != "[200 200 200 429 429 429]" || unknown != 3 {
		t.Errorf("unknown alias addresses: %v, %d searches; want 3 answered, 3 searches", codes, unknown)
	}
}

// lookup says that the address's domain is an alias, which addresses were
// searched, and decides the primary domain's user.
func TestAliasDomainLookupSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF+aliasDomainLDIF))
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, hostedConfigText(t, srv, time.Minute, time.Minute))
	var out, errOut strings.Builder
	if code := run(t.Context(), []string{"lookup", "--config", cfgFile, "u9@alias7.test"}, &out, &errOut); code != 0 {
		t.Fatalf("lookup: %d %s", code, errOut.String())
	}
	var got lookupOutput
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatal(err)
	}
	ex, acct := got.Explanation, got.Account
	if got.Domain == nil || got.Domain.AliasOf != "c7.test" || ex == nil || ex.AliasOf != "c7.test" || !ex.Found ||
		ex.DN != "uid=u9,ou=people,dc=example,dc=com" || !strings.Contains(ex.Reason, "alias7.test is an alias of c7.test: searched as u9@c7.test or u9@alias7.test") {
		t.Errorf("lookup explains:\n%s", out.String())
	}
	if !acct.Known || acct.Address != "u9@alias7.test" || acct.Primary != "u9@c7.test" || acct.DisplayName != "U Nine" || len(acct.Services) != 2 || acct.Services[0].Login != "u9" {
		t.Errorf("lookup account: %+v", acct)
	}
}
