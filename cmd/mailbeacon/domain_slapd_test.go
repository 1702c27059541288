package main

// Hosted domains from a real OpenLDAP directory (iRedMail-style mailDomain
// entries, ldaptest.HostedLDIF), with no domains list in the
// configuration: served, added, disabled, aliased and switched off
// through the directory alone.

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check"
	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check/checktest"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// hostedConfigText is the README's iredmail domain_source example pointed
// at srv, with short TTLs: no domains list at all.
func hostedConfigText(t *testing.T, srv *ldaptest.Server, ttl, negativeTTL time.Duration) string {
	t.Helper()
	return slapdLDAPText(t, srv, slapdOptions{}) + fmt.Sprintf(`policy:
  preset: iredmail
  login: "{uid}"
cache:
  ttl: %s
  negative_ttl: %s
domain_source:
  preset: iredmail
  base_dn: o=domains,dc=example,dc=com
  template:
    provider: "{cn}"
    services:
      - {type: imap, host: "mail.{domain}", port: 993, socket: tls}
      - {type: pop3, host: "mail.{domain}", port: 995, socket: tls}
      - {type: smtp, host: "smtp.{domain}", host_attribute: mtaTransport, port: 465, socket: tls}
      - {type: activesync, url: "https://mail.{domain}/Microsoft-Server-ActiveSync"}
`, ttl, negativeTTL)
}

func hostedHandler(t *testing.T, srv *ldaptest.Server, ttl, negativeTTL time.Duration) http.Handler {
	t.Helper()
	return newGeneration(buildText(t, hostedConfigText(t, srv, ttl, negativeTTL)), nil, nil).handler
}

// buildText builds the configuration text, closed when the test ends.
func buildText(t testing.TB, text string) *app {
	t.Helper()
	cfg, err := loadConfig(strings.NewReader(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.source.Close)
	return a
}

// autoconfigHosts summarises an autoconfig answer as type:host:user.
func autoconfigHosts(t *testing.T, h http.Handler, addr string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress="+addr, nil))
	if rec.Code != 200 {
		return rec.Code, ""
	}
	var doc struct {
		Servers []struct {
			Type     string `xml:"type,attr"`
			Host     string `xml:"hostname"`
			Username string `xml:"username"`
		} `xml:"emailProvider>incomingServer"`
		Out []struct {
			Host     string `xml:"hostname"`
			Username string `xml:"username"`
		} `xml:"emailProvider>outgoingServer"`
		Display string `xml:"emailProvider>displayName"`
	}
	if err := xml.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	var parts []string
	for _, s := range doc.Servers {
		parts = append(parts, s.Type+":"+s.Host+":"+s.Username)
	}
	for _, s := range doc.Out {
		parts = append(parts, "smtp:"+s.Host+":"+s.Username)
	}
	return rec.Code, doc.Display + " " + strings.Join(parts, " ")
}

func ldapRoot(t *testing.T, srv *ldaptest.Server) *ldap.Conn {
	t.Helper()
	c, err := ldap.DialURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Bind(ldaptest.RootDN, srv.RootPassword); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDirectoryDomainAnswersSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	h := hostedHandler(t, srv, time.Minute, time.Minute)
	for _, tc := range []struct {
		name, addr string
		status     int
		want       string
	}{
		{"directory domain", "hanna@hosted.example", 200,
			"Hosted Ltd imap:mail.hosted.example:hanna pop3:mail.hosted.example:hanna smtp:smtp.hosted.example:hanna"},
		{"unknown user of a directory domain", "nobody@hosted.example", 200,
			"Hosted Ltd imap:mail.hosted.example:nobody@hosted.example pop3:mail.hosted.example:nobody@hosted.example smtp:smtp.hosted.example:nobody@hosted.example"},
		{"alias domain: its target's services, and the target's user", "hanna@alias.example", 200,
			"Hosted Ltd imap:mail.hosted.example:hanna pop3:mail.hosted.example:hanna smtp:smtp.hosted.example:hanna"},
		{"alias domain: an unknown user gets the target's defaults", "nobody@alias.example", 200,
			"Hosted Ltd imap:mail.hosted.example:nobody@alias.example pop3:mail.hosted.example:nobody@alias.example smtp:smtp.hosted.example:nobody@alias.example"},
		{"domain-level switch beats the user's pop3secured", "nora@nopop.example", 200,
			"nopop.example imap:mail.nopop.example:nora smtp:smtp.nopop.example:nora"},
		{"host from the domain's relay transport", "x@relay.example", 200,
			"relay.example imap:mail.relay.example:x@relay.example pop3:mail.relay.example:x@relay.example smtp:mx1.relay.example:x@relay.example"},
		{"disabled domain", "x@off.example", 404, ""},
		{"no such domain", "x@nowhere.example", 404, ""},
		{"filter metacharacters", "x@*.example", 400, ""},
		{"filter metacharacters 2", "x@hosted.example)(objectClass=*", 400, ""},
		{"overlong label", "x@" + strings.Repeat("a", 64) + ".example", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, got := autoconfigHosts(t, h, tc.addr)
			if code != tc.status || got != tc.want {
				t.Errorf("got %d %q\nwant %d %q", code, got, tc.status, tc.want)
			}
		})
	}
	t.Run("Autodiscover", func(t *testing.T) {
		rec, a := adPOST(t, h, "hanna@hosted.example", adOutlookSchema, "", "")
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "<Server>mail.hosted.example</Server>") || len(a.Response.Account) == 0 {
			t.Errorf("%d %s", rec.Code, rec.Body)
		}
		rec, _ = adPOST(t, h, "x@nowhere.example", adOutlookSchema, "", "")
		if strings.Contains(rec.Body.String(), "<Server>") || !strings.Contains(rec.Body.String(), "<Error") {
			t.Errorf("unknown domain: %d %s", rec.Code, rec.Body)
		}
	})
}

// The done-when of issue 12: `serve`, no domains list, the slapd test
// directory: autoconfig (by query and by Host), Autodiscover and an Apple
// profile for a domain that is only a directory entry; 404 for one that
// does not exist.
func TestServeDirectoryDomainSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, hostedConfigText(t, srv, time.Minute, time.Minute)+"server:\n  listen: 127.0.0.1:0\n")
	s := startServe(t, []string{"--config", cfgFile})
	base := s.addrs["server.listen"]
	c := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name, path, host string
		status           int
		want             string
	}{
		{"autoconfig", "/mail/config-v1.1.xml?emailaddress=hanna@hosted.example", "", 200, "<hostname>mail.hosted.example</hostname>"},
		{"autoconfig by Host", "/mail/config-v1.1.xml", "autoconfig.hosted.example", 200, "<hostname>mail.hosted.example</hostname>"},
		{"profile", "/mobileconfig?emailaddress=hanna@hosted.example", "", 200, "mail.hosted.example"},
		{"v2 JSON", "/autodiscover/autodiscover.json/v1.0/hanna@hosted.example?Protocol=AutodiscoverV1", "", 200, "https://autodiscover.hosted.example/autodiscover/autodiscover.xml"},
		{"unknown domain", "/mail/config-v1.1.xml?emailaddress=x@nowhere.example", "", 404, ""},
		{"unknown domain by Host", "/mail/config-v1.1.xml", "autoconfig.nowhere.example", 404, ""},
		{"unknown domain profile", "/mobileconfig?emailaddress=x@nowhere.example", "", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, c, base+tc.path, tc.host)
			if code != tc.status || !strings.Contains(body, tc.want) {
				t.Errorf("%s: %d, want %d with %q\n%s", tc.path, code, tc.status, tc.want, body)
			}
		})
	}
	resp, err := c.Post(base+"/autodiscover/autodiscover.xml", "text/xml", strings.NewReader(adXMLBody("hanna@hosted.example")))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(b.String(), "<Server>mail.hosted.example</Server>") {
		t.Errorf("Autodiscover POX: %d %s", resp.StatusCode, b.String())
	}
}

// A domain entry added with an LDAP add is answered once the negative TTL
// has passed, without a restart; disabled, it is refused once the TTL has.
func TestDirectoryDomainAddedAndDisabledSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	const ttl, negTTL = 3 * time.Second, 2 * time.Second
	h := hostedHandler(t, srv, ttl, negTTL)
	root := ldapRoot(t, srv)
	const dn = "domainName=fresh.example,o=domains,dc=example,dc=com"

	if code, _ := autoconfigHosts(t, h, "x@fresh.example"); code != 404 {
		t.Fatalf("before the add: %d", code)
	}
	add := ldap.NewAddRequest(dn, nil)
	add.Attribute("objectClass", []string{"mailDomain"})
	add.Attribute("domainName", []string{"fresh.example"})
	add.Attribute("accountStatus", []string{"active"})
	if err := root.Add(add); err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	answered := pollStatus(t, h, "x@fresh.example", 200, negTTL+2*time.Second)
	t.Logf("added domain answered after %v (negative TTL %v)", answered.Sub(added).Round(10*time.Millisecond), negTTL)

	mod := ldap.NewModifyRequest(dn, nil)
	mod.Replace("accountStatus", []string{"disabled"})
	if err := root.Modify(mod); err != nil {
		t.Fatal(err)
	}
	disabled := time.Now()
	refused := pollStatus(t, h, "x@fresh.example", 404, ttl+2*time.Second)
	t.Logf("disabled domain refused after %v (TTL %v)", refused.Sub(disabled).Round(10*time.Millisecond), ttl)
}

// pollStatus asks for addr until the answer has status want, within limit.
func pollStatus(t *testing.T, h http.Handler, addr string, want int, limit time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		code, _ := autoconfigHosts(t, h, addr)
		if code == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %d after %v, want %d", addr, code, limit, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lookup says which entry made the domain and which template made each
// service; dns prints the records of a directory domain.
func TestDirectoryDomainLookupAndDNSSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, hostedConfigText(t, srv, time.Minute, time.Minute))
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"lookup", "--config", cfgFile, "nora@nopop.example"}, &out, &errOut); code != 0 {
		t.Fatalf("lookup: %d %s", code, errOut.String())
	}
	var got lookupOutput
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	d := got.Domain
	if d == nil || d.Source != "directory" || d.Entry != "domainName=nopop.example,o=domains,dc=example,dc=com" || len(d.Services) != 4 {
		t.Fatalf("domain origin %+v", d)
	}
	for i, want := range []string{"imap: host mail.nopop.example from template mail.{domain}", "pop3: removed for the domain", "", "activesync: url https://mail.nopop.example/"} {
		if !strings.Contains(d.Services[i], want) {
			t.Errorf("service %d: %q, want …%s…", i, d.Services[i], want)
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"lookup", "--config", cfgFile, "x@off.example"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "disabled") {
		t.Errorf("lookup of a disabled domain: %d %s", code, errOut.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"dns", "--config", cfgFile, "--target", "mb.example.net", "relay.example"}, &out, &errOut); code != 0 {
		t.Fatalf("dns: %d %s", code, errOut.String())
	}
	for _, want := range []string{"autoconfig.relay.example.", "autodiscover.relay.example.", "_submissions._tcp.relay.example."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dns output lacks %s:\n%s", want, out.String())
		}
	}
	if code := run(context.Background(), []string{"dns", "--config", cfgFile, "--target", "mb.example.net", "nowhere.example"}, &out, &errOut); code == 0 {
		t.Error("dns for a domain the directory does not serve succeeded")
	}
	_ = os.Remove(cfgFile)
}

// A reload keeps the cached directory domains under the same template and
// drops them when the template changed.
func TestReloadDirectoryDomainTemplateSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	text := hostedConfigText(t, srv, time.Minute, time.Minute)
	old := buildText(t, text)
	if _, err := old.resolver.Domain(context.Background(), "hosted.example"); err != nil {
		t.Fatal(err)
	}
	same := buildText(t, text)
	if _, changed := carryCache(old, same); len(changed) != 0 || same.resolver.DomainSource().Len() != 1 {
		t.Errorf("same template: changed %v, %d domains kept, want 1", changed, same.resolver.DomainSource().Len())
	}
	other := buildText(t, strings.Replace(text, `provider: "{cn}"`, `provider: "{domain} mail"`, 1))
	if _, changed := carryCache(old, other); !slices.Contains(changed, "domain_source") || other.resolver.DomainSource().Len() != 0 {
		t.Errorf("changed template: changed %v, %d domains kept, want 0", changed, other.resolver.DomainSource().Len())
	}
	if d, err := other.resolver.Domain(context.Background(), "hosted.example"); err != nil || d.Provider != "hosted.example mail" {
		t.Errorf("after the reload: %+v, %v", d, err)
	}
}

// The README's domain_source examples load and build, each with its
// preset (the third takes ldap and policy from the second).
func TestREADMEDomainSourceExamples(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(b), "\n## Hosted domains from the directory\n")
	section, _, _ = strings.Cut(section, "\n## ")
	var blocks []string
	for {
		var block string
		var ok bool
		if _, section, ok = strings.Cut(section, "```yaml\n"); !ok {
			break
		}
		block, section, _ = strings.Cut(section, "```")
		blocks = append(blocks, block)
	}
	if len(blocks) != 3 {
		t.Fatalf("%d yaml blocks in the section, want 3", len(blocks))
	}
	ldapAndPolicy, _, _ := strings.Cut(blocks[1], "domain_source:")
	blocks[2] = ldapAndPolicy + blocks[2]
	for i, want := range []string{"iredmail", "active-directory", "active-directory-ou"} {
		cfg, err := loadConfig(strings.NewReader(blocks[i]), "README.md")
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if cfg.DomainSource.Preset != want || len(cfg.Domains) != 0 {
			t.Errorf("block %d: preset %q, %d domains", i, cfg.DomainSource.Preset, len(cfg.Domains))
		}
		cfg.LDAP.CAFile, cfg.LDAP.BindPasswordFile, cfg.LDAP.BindPassword = "", "", "x"
		a, err := build(cfg, nil)
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		a.source.Close()
		if a.resolver.DomainSource() == nil {
			t.Errorf("block %d: no domain source", i)
		}
	}
}

// The directory down: cached domains are answered (stale past their TTL),
// a domain never seen gets 503, not 404. A domain_source.base_dn that does
// not exist is named by the start-up check, and its domains get 503.
func TestDirectoryDomainOutageAndMisconfigurationSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	t.Run("outage", func(t *testing.T) {
		h := hostedHandler(t, srv, time.Second, time.Second)
		if code, _ := autoconfigHosts(t, h, "hanna@hosted.example"); code != 200 {
			t.Fatalf("before: %d", code)
		}
		srv.Stop()
		defer srv.Start()
		time.Sleep(1500 * time.Millisecond) // past the TTL: stale
		if code, got := autoconfigHosts(t, h, "hanna@hosted.example"); code != 200 || !strings.Contains(got, "imap:mail.hosted.example:hanna") {
			t.Errorf("stale while down: %d %q", code, got)
		}
		if code, _ := autoconfigHosts(t, h, "x@relay.example"); code != http.StatusServiceUnavailable {
			t.Errorf("domain never seen while down: %d, want 503", code)
		}
	})
	t.Run("misconfigured base_dn", func(t *testing.T) {
		text := strings.Replace(hostedConfigText(t, srv, time.Minute, time.Minute), "base_dn: o=domains,", "base_dn: o=nodomains,", 1)
		a := buildText(t, text)
		if err := a.domains.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), `domain_source.base_dn: no such entry as "o=nodomains,dc=example,dc=com"`) ||
			strings.Contains(err.Error(), "ldap.base_dn") {
			t.Errorf("Ping = %v", err)
		}
		// serve refuses to start on it, as on any configuration the
		// directory refuses, unless told to start degraded.
		if err := checkDirectory(context.Background(), a, false, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "domain_source.base_dn") {
			t.Errorf("checkDirectory = %v, want a refusal naming domain_source.base_dn", err)
		}
		if err := checkDirectory(context.Background(), a, true, slog.New(slog.DiscardHandler)); err != nil {
			t.Errorf("checkDirectory, degraded = %v", err)
		}
		if code, _ := autoconfigHosts(t, newGeneration(a, nil, nil).handler, "hanna@hosted.example"); code != http.StatusServiceUnavailable {
			t.Errorf("autoconfig with a wrong base_dn: %d, want 503", code)
		}
	})
}

// check finds a directory domain and checks it (here against nothing:
// every check fails, each naming the domain's own names); a domain the
// directory does not serve is an error before any check.
func TestCheckDirectoryDomainSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, hostedConfigText(t, srv, time.Minute, time.Minute))
	dns := checktest.StartDNS(t, "")
	checkAddr := func(addr string) (string, error) {
		var out, errOut bytes.Buffer
		err := checkWith(context.Background(), []string{"--config", cfgFile, "--resolver", dns.Addr, "--target", "mb.example.net", addr}, &out, &errOut, func(o *check.Options) {
			o.DialAddr = func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("test: no network") }
			o.Timeout = time.Second
		})
		return out.String(), err
	}
	report, err := checkAddr("hanna@hosted.example")
	if err == nil || !strings.Contains(err.Error(), "checks failed") || !strings.Contains(report, "autoconfig.hosted.example") {
		t.Errorf("check of a directory domain: %v\n%s", err, report)
	}
	if _, err := checkAddr("x@nowhere.example"); err == nil || !strings.Contains(err.Error(), "neither in the domains list nor served by the directory") {
		t.Errorf("check of an unknown domain: %v", err)
	}
}

// config check --online reads domain_source.base_dn too: a missing one is
// a configuration error, exit 1 naming the key, as serve refuses it.
func TestConfigCheckOnlineDomainSourceSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	good := hostedConfigText(t, srv, time.Minute, time.Minute)
	for _, tc := range []struct {
		name, text string
		code       int
		want       string
	}{
		{"present", good, 0, "domain_source: read domain_source.base_dn"},
		{"missing", strings.Replace(good, "base_dn: o=domains,", "base_dn: o=nodomains,", 1), exitConfigInvalid, "domain_source.base_dn: no such entry"},
	} {
		file := filepath.Join(t.TempDir(), "config.yaml")
		writeFile(t, file, tc.text)
		if code, out, errOut := runConfigCheck(t, "--online", file); code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("%s: exit %d (want %d), want %q in\nstdout %s\nstderr %s", tc.name, code, tc.code, tc.want, out, errOut)
		}
	}
}
