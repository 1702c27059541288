package main

// The zimbra preset end to end against a real slapd holding a Zimbra
// directory (ldaptest.ZimbraLDIF): accounts, their domains and two classes
// of service under cn=zimbra.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// zimbraConfigText configures the zimbra preset against srv for
// example.com and school.example.com; policyExtra adds keys to the policy
// section, cacheText a cache section.
func zimbraConfigText(t testing.TB, srv *ldaptest.Server, policyExtra, cacheText string) string {
	t.Helper()
	services := `
    default_services: [imap, smtp]
    services:
      - {type: imap, host: mail.example.com, port: 993, socket: tls}
      - {type: pop3, host: mail.example.com, port: 995, socket: tls}
      - {type: smtp, host: mail.example.com, port: 465, socket: tls}
      - {type: activesync, url: "https://mail.example.com/Microsoft-Server-ActiveSync"}
      - {type: ews, url: "https://mail.example.com/EWS/Exchange.asmx"}`
	return slapdLDAPText(t, srv, slapdOptions{}) + fmt.Sprintf(`policy:
  preset: zimbra
%s
%s
domains:
  - name: example.com
    provider: Example%s
  - name: school.example.com
    provider: School%s
`, policyExtra, cacheText, services, services)
}

// TestPresetZimbraSlapd: who gets what, from the account's own switches or
// its class of service, in Thunderbird's autoconfig and in Autodiscover
// POX (outlook and mobilesync).
func TestPresetZimbraSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.Zimbra()...)
	a := buildText(t, zimbraConfigText(t, srv, "", ""))
	if err := checkDirectory(context.Background(), a, false, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))

	const (
		mail = "mail.example.com"
		exch = "EXCH:0/@mail.example.com/on/ EXPR:0/@mail.example.com/on/ "
	)
	pox := func(login, host string, kinds ...string) string {
		var out []string
		for _, k := range kinds {
			switch k {
			case "imap":
				out = append(out, "IMAP:993/"+login+"@"+host+"/on/SSL")
			case "pop3":
				out = append(out, "POP3:995/"+login+"@"+host+"/on/SSL")
			case "smtp":
				out = append(out, "SMTP:465/"+login+"@"+host+"/on/SSL")
			}
		}
		return strings.Join(out, " ")
	}
	auto := func(provider, login, host string, kinds ...string) string {
		var in, out []string
		for _, k := range kinds {
			switch k {
			case "smtp":
				out = append(out, "smtp:"+host+":"+login)
			case "ews": // reached by URL: no host name
				in = append(in, "ews::"+login)
			default:
				in = append(in, k+":"+host+":"+login)
			}
		}
		return provider + " " + strings.Join(append(in, out...), " ")
	}
	for _, tc := range []struct {
		name, addr string
		auto, pox  string
		mobile     bool
	}{
		// zimbraCOSId students: POP3 off and mobile sync on, from the COS;
		// zimbraMailHost replaces the host.
		{"cos_students", "ada@example.com",
			auto("Example", "ada@example.com", "mbox1.example.com", "imap", "smtp"),
			pox("ada@example.com", "mbox1.example.com", "imap", "smtp"), true},
		// An alias: the account's answer, login the delivery address.
		{"alias", "ada.lovelace@example.com",
			auto("Example", "ada@example.com", "mbox1.example.com", "imap", "smtp"),
			pox("ada@example.com", "mbox1.example.com", "imap", "smtp"), true},
		// No zimbraCOSId, the domain names no default: COS default.
		{"cos_default", "bob@example.com",
			auto("Example", "bob@example.com", mail, "imap", "pop3", "smtp"),
			pox("bob@example.com", mail, "imap", "pop3", "smtp"), false},
		// No zimbraCOSId: the domain's zimbraDomainDefaultCOSId, students.
		{"domain_default_cos", "carol@school.example.com",
			auto("School", "carol@school.example.com", mail, "imap", "smtp"),
			pox("carol@school.example.com", mail, "imap", "smtp"), true},
		// Locked and closed accounts get the domain defaults (imap, smtp)
		// with the typed address as login.
		{"locked", "locked@example.com",
			auto("Example", "locked@example.com", mail, "imap", "smtp"),
			pox("locked@example.com", mail, "imap", "smtp"), false},
		{"closed", "closed@example.com",
			auto("Example", "closed@example.com", mail, "imap", "smtp"),
			pox("closed@example.com", mail, "imap", "smtp"), false},
		// The account's own switch wins over its COS.
		{"own_imap_off", "noimap@example.com",
			auto("Example", "noimap@example.com", mail, "pop3", "smtp"),
			pox("noimap@example.com", mail, "pop3", "smtp"), false},
		{"own_pop3_off", "nopop@example.com",
			auto("Example", "nopop@example.com", mail, "imap", "smtp"),
			pox("nopop@example.com", mail, "imap", "smtp"), false},
		{"own_pop3_on_over_students", "pop@example.com",
			auto("Example", "pop@example.com", mail, "imap", "pop3", "smtp"),
			pox("pop@example.com", mail, "imap", "pop3", "smtp"), true},
		{"own_mobile_on", "mobile@example.com",
			auto("Example", "mobile@example.com", mail, "imap", "pop3", "smtp"),
			pox("mobile@example.com", mail, "imap", "pop3", "smtp"), true},
		{"own_ews_on", "ews@example.com",
			auto("Example", "ews@example.com", mail, "imap", "pop3", "ews", "smtp"),
			exch + pox("ews@example.com", mail, "imap", "pop3", "smtp"), false},
		{"unknown", "nobody@example.com",
			auto("Example", "nobody@example.com", mail, "imap", "smtp"),
			pox("nobody@example.com", mail, "imap", "smtp"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, got := autoconfigHosts(t, h, tc.addr); code != http.StatusOK || got != tc.auto {
				t.Errorf("autoconfig %d\n got %s\nwant %s", code, got, tc.auto)
			}
			rec, ans := adPOST(t, h, tc.addr, adOutlookSchema, "", "")
			if rec.Code != http.StatusOK || ans.protocols() != tc.pox {
				t.Errorf("POX outlook %d\n got %s\nwant %s", rec.Code, ans.protocols(), tc.pox)
			}
			_, ans = adPOST(t, h, tc.addr, adMobilesyncSchema, "", "")
			if got := ans.Response.Action.Settings != nil; got != tc.mobile {
				t.Errorf("POX mobilesync offers ActiveSync: %t, want %t (%+v)", got, tc.mobile, ans.Response.Action)
			}
		})
	}

	// lookup says where each switch came from.
	for _, tc := range []struct{ addr, service, want string }{
		{"ada@example.com", "pop3", `zimbraPop3Enabled equals "TRUE" is false, from cos "students"`},
		{"bob@example.com", "pop3", `zimbraPop3Enabled equals "TRUE" is true, from cos "default"`},
		{"carol@school.example.com", "activesync", `zimbraFeatureMobileSyncEnabled equals "TRUE" is true, from cos "students"`},
		{"pop@example.com", "pop3", `zimbraPop3Enabled equals "TRUE" is true`},
	} {
		acct, ex, err := a.resolver.Explain(context.Background(), mustParse(t, tc.addr))
		if err != nil {
			t.Fatal(err)
		}
		var rule string
		for _, d := range ex.Services {
			if d.Service == tc.service {
				rule = d.Rule
			}
		}
		if rule != tc.want {
			t.Errorf("%s %s: rule %q, want %q (%+v)", tc.addr, tc.service, rule, tc.want, toAccountJSON(acct))
		}
	}
	_, ex, err := a.resolver.Explain(context.Background(), mustParse(t, "carol@school.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Linked) != 2 || ex.Linked[0].DN != "dc=school,dc=example,dc=com" || ex.Linked[1].DN != ldaptest.ZimbraStudentsCOSDN ||
		!strings.Contains(ex.Linked[1].FoundBy, ldaptest.ZimbraStudentsCOSID) {
		t.Errorf("carol's linked entries: %+v", ex.Linked)
	}
	_, ex, err = a.resolver.Explain(context.Background(), mustParse(t, "bob@example.com"))
	if err != nil || len(ex.Linked) != 2 || ex.Linked[1].DN != ldaptest.ZimbraDefaultCOSDN || ex.Linked[1].FoundBy != "the fixed dn" {
		t.Errorf("bob's linked entries: %v %+v", err, ex)
	}
	// The lookup command prints the same.
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, zimbraConfigText(t, srv, "", ""))
	var out, errOut strings.Builder
	if code := run(t.Context(), []string{"lookup", "--config", cfgFile, "ada.lovelace@example.com"}, &out, &errOut); code != 0 {
		t.Fatalf("lookup: %d %s", code, errOut.String())
	}
	var got lookupOutput
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatal(err)
	}
	if lx := got.Explanation; lx == nil || len(lx.Linked) != 2 || lx.Linked[1].DN != ldaptest.ZimbraStudentsCOSDN ||
		!strings.Contains(out.String(), `zimbraPop3Enabled equals \"TRUE\" is false, from cos \"students\"`) {
		t.Errorf("lookup explains:\n%s", out.String())
	}
}

// TestPresetZimbraCOSSearchedOnceSlapd: hundreds of users of one class of
// service, asked at once, cost the directory one search each and one
// search per linked entry, whichever way each user reaches it.
func TestPresetZimbraCOSSearchedOnceSlapd(t *testing.T) {
	const students, school, plain = 150, 100, 50
	var extra strings.Builder
	var addrs []string
	add := func(uid, domain, dn, more string) {
		fmt.Fprintf(&extra, "\ndn: uid=%[1]s,ou=people,%[2]s\nobjectClass: inetOrgPerson\nobjectClass: zimbraAccount\nuid: %[1]s\ncn: %[1]s\nsn: %[1]s\n"+
			"zimbraId: id-%[1]s\nzimbraAccountStatus: active\nzimbraMailDeliveryAddress: %[1]s@%[3]s\n%[4]s\n", uid, dn, domain, more)
		addrs = append(addrs, uid+"@"+domain)
	}
	for i := range students {
		add(fmt.Sprintf("s%d", i), "example.com", "dc=example,dc=com", "zimbraCOSId: "+ldaptest.ZimbraStudentsCOSID)
	}
	for i := range school {
		add(fmt.Sprintf("k%d", i), "school.example.com", "dc=school,dc=example,dc=com", "")
	}
	for i := range plain {
		add(fmt.Sprintf("p%d", i), "example.com", "dc=example,dc=com", "")
	}
	srv := ldaptest.Slapd(t, ldaptest.Zimbra(ldaptest.WithExtraLDIF(extra.String()))...)
	a := buildText(t, zimbraConfigText(t, srv, "", ""))
	if err := a.source.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}

	before := srv.SearchCount()
	gate := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, len(addrs))
	for _, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			acct, err := a.resolver.Resolve(context.Background(), mustParse(t, addr))
			switch {
			case err != nil:
				errs <- err
			case !acct.Known:
				errs <- fmt.Errorf("%s: not known", addr)
			case strings.HasPrefix(addr, "p") != acct.Has("pop3"):
				// Only the users of COS default have POP3.
				errs <- fmt.Errorf("%s: pop3 %t", addr, acct.Has("pop3"))
			}
		}()
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// One search per user; then the COS students (by zimbraCOSId and by
	// school.example.com's default, the same filter), the two domain
	// entries and the COS default by its DN.
	if got, want := srv.SearchCount()-before, len(addrs)+4; got != want {
		t.Errorf("%d users cost %d searches, want %d", len(addrs), got, want)
	}
}

// A class of service the directory has no base for is a configuration
// error naming the key, not a user without services.
func TestPresetZimbraLinkedBaseMissingSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.Zimbra()...)
	policyExtra := `  linked:
    - name: cos
      base_dn: cn=cos,cn=nowhere
      scope: one
      find: ["(&(objectClass=zimbraCOS)(zimbraId={zimbraCOSId}))"]
      inherit: [zimbraPop3Enabled]`
	a := buildText(t, zimbraConfigText(t, srv, policyExtra, ""))
	// serve refuses to start, as for a missing ldap.base_dn.
	if err := checkDirectory(context.Background(), a, false, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "policy.linked[0].base_dn") || ldapsource.ConfigurationError(err) == nil {
		t.Errorf("start-up check: %v, want a configuration error naming policy.linked[0].base_dn", err)
	}
	_, _, err := a.resolver.Explain(context.Background(), mustParse(t, "ada@example.com"))
	if err == nil || !strings.Contains(err.Error(), "policy.linked[0].base_dn") {
		t.Fatalf("err = %v, want one naming policy.linked[0].base_dn", err)
	}
	// Served, the address gets the domain defaults, as in an outage.
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	if code, got := autoconfigHosts(t, h, "ada@example.com"); code != http.StatusOK ||
		got != "Example imap:mail.example.com:ada@example.com smtp:mail.example.com:ada@example.com" {
		t.Errorf("served %d %s", code, got)
	}
}
