package protocols

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"howett.net/plist"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Per-user destinations (CLIENTS.md §1.9, §2.6, §3): each format for a user
// on the domain's own servers (alice), a user moved to Microsoft 365 whose
// Autodiscover is redirected to the tenant address (mia), the same without
// POP3 and Graph (pat), a user at a second site with its own hosts and no
// redirect (sam), a user whose destination redirects to a URL (ron), and an
// unknown address, whose answers must stay exactly what they were.

const (
	m365EWS        = "https://outlook.office365.com/EWS/Exchange.asmx"
	m365Graph      = "https://graph.microsoft.com"
	m365ActiveSync = "https://outlook.office365.com/Microsoft-Server-ActiveSync"
	siteCRedirect  = "https://autodiscover.site-c.example/autodiscover/autodiscover.xml"
)

// destUser is a directory user behind a destination.
type destUser struct {
	display string
	dest    *policy.Destination
	kinds   []policy.Kind // entitlements: the destination's services of these kinds
	svcs    []policy.Service
}

// m365Services are a Microsoft 365 tenant's, as Microsoft documents them
// (outlook.office365.com, smtp.office365.com); OAuth2 only.
func m365Services() []policy.Service {
	oauth := []policy.Auth{policy.AuthOAuth2}
	return []policy.Service{
		{Kind: policy.IMAP, Host: "outlook.office365.com", Port: 993, Socket: policy.SocketTLS, Auth: oauth},
		{Kind: policy.POP3, Host: "outlook.office365.com", Port: 995, Socket: policy.SocketTLS, Auth: oauth},
		{Kind: policy.SMTP, Host: "smtp.office365.com", Port: 587, Socket: policy.SocketSTARTTLS, Auth: oauth},
		{Kind: policy.ActiveSync, URL: m365ActiveSync, Auth: oauth},
		{Kind: policy.EWS, URL: m365EWS, Auth: oauth},
		{Kind: policy.Graph, URL: m365Graph, Auth: oauth},
	}
}

func siteBServices() []policy.Service {
	pw := []policy.Auth{policy.AuthPasswordCleartext}
	return []policy.Service{
		{Kind: policy.IMAP, Host: "imap.site-b.example.net", Port: 993, Socket: policy.SocketTLS, Auth: pw},
		{Kind: policy.SMTP, Host: "smtp.site-b.example.net", Port: 587, Socket: policy.SocketSTARTTLS, Auth: pw},
	}
}

func m365Destination(local string) *policy.Destination {
	return &policy.Destination{
		Name: "m365", Provider: "Microsoft 365",
		OAuth: &policy.OAuth{
			Issuer: "https://login.microsoftonline.com/organizations/v2.0",
			Scopes: []string{"https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send", "offline_access"},
		},
		RedirectAddr: local + "@contoso.mail.onmicrosoft.com",
	}
}

var destUsers = map[string]destUser{
	"mia": {display: "Mia Moved", dest: m365Destination("mia"), svcs: m365Services()},
	"pat": {display: "Pat NoPop", dest: m365Destination("pat"), svcs: m365Services(),
		kinds: []policy.Kind{policy.IMAP, policy.SMTP, policy.ActiveSync, policy.EWS}},
	"sam": {display: "Sam Site-B", dest: &policy.Destination{Name: "site-b", Provider: "Example Site B"}, svcs: siteBServices()},
	"ron": {display: "Ron Redirected", svcs: siteBServices(),
		dest: &policy.Destination{Name: "site-c", Provider: "Example Site C", RedirectURL: siteCRedirect}},
}

// destResolver is the demo directory plus the users behind destinations,
// each one Account, handed out again and again as the policy cache does.
type destResolver struct {
	*fakeResolver
	accounts map[string]*policy.Account
}

func newDestResolver(t testing.TB) *destResolver {
	t.Helper()
	r := &destResolver{fakeResolver: newDraftResolver(t), accounts: map[string]*policy.Account{}}
	d := r.domains["example.com"]
	for local, u := range destUsers {
		a := &policy.Account{
			Address: policy.Address{Local: local, Domain: d.Name}, Primary: local + "@" + d.Name,
			DisplayName: u.display, Known: true, Domain: d, DN: "uid=" + local + ",ou=people,dc=example,dc=com",
			Destination: u.dest,
		}
		for _, s := range u.svcs {
			if u.kinds != nil && !slices.Contains(u.kinds, s.Kind) {
				continue
			}
			s.Login = a.Primary
			a.Services = append(a.Services, s)
		}
		r.accounts[a.Primary] = a
	}
	return r
}

func (r *destResolver) Resolve(ctx context.Context, addr policy.Address) (*policy.Account, error) {
	if a, ok := r.accounts[addr.String()]; ok {
		r.searches.Add(1) // every lookup, cached or not
		return a, nil
	}
	return r.fakeResolver.Resolve(ctx, addr)
}

// destHandlers returns a handler over the destinations and one over the
// same directory without them: the unknown address must get the same
// bytes from both.
func destHandlers(t testing.TB) (withDest, without *Handler) {
	t.Helper()
	return NewHandler(newDestResolver(t), Options{}), NewHandler(newDraftResolver(t), Options{})
}

func assertUnchanged(t *testing.T, name string, got, before []byte) {
	t.Helper()
	if !bytes.Equal(got, before) {
		t.Errorf("%s: the unknown address's answer changed:\n%s\nwas:\n%s", name, got, before)
	}
}

func TestDestinationAutodiscoverPOX(t *testing.T) {
	h, plain := destHandlers(t)
	post := func(h http.Handler, addr string) []byte {
		return adPost(t, h, "", poxPath, adRequest(addr, adOutlookSchema)).Body.Bytes()
	}
	for _, tc := range []struct {
		user, golden         string
		action, target, want string // want: protocol summary for settings
	}{
		{user: "alice", action: "settings", want: "EXCH EXPR IMAP POP3 SMTP SMTP"},
		{user: "mia", golden: "outlook-mia-redirect", action: "redirectAddr", target: "mia@contoso.mail.onmicrosoft.com"},
		{user: "pat", action: "redirectAddr", target: "pat@contoso.mail.onmicrosoft.com"},
		{user: "ron", golden: "outlook-ron-redirecturl", action: "redirectUrl", target: siteCRedirect},
		{user: "sam", golden: "outlook-sam-siteb", action: "settings", want: "IMAP SMTP"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			body := post(h, tc.user+"@example.com")
			if tc.golden != "" {
				golden(t, "destination/"+tc.golden+".xml", body)
			}
			d := adParse(t, adPost(t, h, "", poxPath, adRequest(tc.user+"@example.com", adOutlookSchema)))
			if len(d.Response.Account) != 1 {
				t.Fatalf("%d Account elements", len(d.Response.Account))
			}
			a := d.Response.Account[0]
			if a.Action != tc.action {
				t.Errorf("Action %q, want %q", a.Action, tc.action)
			}
			if tc.action != "settings" {
				// MS-OXDSCLI 4.2: Account holds the Action and its target, nothing else.
				if got := a.RedirectAddr + a.RedirectURL; got != tc.target {
					t.Errorf("redirect target %q, want %q", got, tc.target)
				}
				if d.Response.User.DisplayName != "" || a.AccountType != "" || len(a.Protocol) != 0 {
					t.Errorf("a redirect carries more than Action and target:\n%s", body)
				}
				for _, s := range []string{"<User>", "AccountType", "Protocol"} {
					if bytes.Contains(body, []byte(s)) {
						t.Errorf("redirect has %s", s)
					}
				}
				return
			}
			var types []string
			for _, p := range a.Protocol {
				types = append(types, p.Type)
				if tc.user == "sam" && !strings.HasSuffix(p.Server, ".site-b.example.net") {
					t.Errorf("site-b user gets server %s", p.Server)
				}
			}
			if got := strings.Join(types, " "); got != tc.want {
				t.Errorf("protocols %s, want %s", got, tc.want)
			}
		})
	}
	// Thunderbird's Exchange probe follows the address (at most twice) and
	// cannot follow the URL.
	t.Run("thunderbird", func(t *testing.T) {
		tenant := func(email string) []byte {
			if strings.HasSuffix(email, "@contoso.mail.onmicrosoft.com") {
				b, _, _ := renderOutlook(&policy.Account{Known: true, Primary: email, Domain: &policy.Domain{},
					Services: []policy.Service{{Kind: policy.EWS, URL: m365EWS}}})
				return b
			}
			return post(h, email)
		}
		last, types, err := thunderbirdAutodiscover("mia@example.com", tenant)
		if err != nil || last != "mia@contoso.mail.onmicrosoft.com" || strings.Join(types, " ") != "EXCH EXPR" {
			t.Errorf("mia: %s %v %v", last, types, err)
		}
		if _, _, err := thunderbirdAutodiscover("ron@example.com", tenant); err == nil {
			t.Error("Thunderbird took a redirectUrl answer for settings")
		}
		loop := func(email string) []byte {
			b, _, _ := renderOutlook(&policy.Account{Known: true, Destination: &policy.Destination{RedirectAddr: "x" + email}})
			return b
		}
		if _, _, err := thunderbirdAutodiscover("mia@example.com", loop); err == nil || err.Error() != "too many redirects" {
			t.Errorf("loop: %v", err)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		got := post(h, "nobody@example.com")
		assertUnchanged(t, "POX", got, post(plain, "nobody@example.com"))
		if bytes.Contains(got, []byte("redirect")) {
			t.Errorf("unknown address redirected:\n%s", got)
		}
		// The demo domain's golden answer, byte for byte.
		base := NewHandler(newDestResolverOver(t, demoDomains()), Options{})
		want, err := os.ReadFile(filepath.Join("testdata", "autodiscover", "outlook-nobody.xml"))
		if err != nil {
			t.Fatal(err)
		}
		assertUnchanged(t, "POX golden", post(base, "nobody@example.com"), want)
	})
}

// newDestResolverOver is newDestResolver over other domains.
func newDestResolverOver(t testing.TB, ds []policy.DomainConfig) *destResolver {
	t.Helper()
	r := newDestResolver(t)
	res, _ := newDemoResolver(t, ds)
	r.fakeResolver = res
	return r
}

// MS-ASCMD 2.2.3.147: Action/Redirect with the address; a destination
// that redirects to a URL has no mobilesync form of it and answers with
// its own ActiveSync service or the protocol's error.
func TestDestinationMobilesync(t *testing.T) {
	h, plain := destHandlers(t)
	post := func(h http.Handler, addr string) []byte {
		return adPost(t, h, "", poxPath, adRequest(addr, adMobilesyncSchema)).Body.Bytes()
	}
	for _, tc := range []struct {
		user, golden, redirect, url string
	}{
		{user: "alice", url: "https://mail.example.com/Microsoft-Server-ActiveSync"},
		{user: "mia", golden: "mobilesync-mia-redirect", redirect: "mia@contoso.mail.onmicrosoft.com"},
		{user: "pat", redirect: "pat@contoso.mail.onmicrosoft.com"},
		{user: "ron"}, // no ActiveSync at site-c: the error
		{user: "sam"}, // none at site-b either
	} {
		t.Run(tc.user, func(t *testing.T) {
			body := post(h, tc.user+"@example.com")
			if tc.golden != "" {
				golden(t, "destination/"+tc.golden+".xml", body)
			}
			d := adParse(t, adPost(t, h, "", poxPath, adRequest(tc.user+"@example.com", adMobilesyncSchema)))
			var redirect struct {
				Response struct {
					Action struct{ Redirect string }
				}
			}
			if err := xml.Unmarshal(body, &redirect); err != nil {
				t.Fatal(err)
			}
			if got := redirect.Response.Action.Redirect; got != tc.redirect {
				t.Errorf("Redirect %q, want %q", got, tc.redirect)
			}
			if tc.redirect != "" {
				if d.Response.Action.Settings != nil || d.Response.Action.Error != nil || d.Response.User.EMailAddress != "" {
					t.Errorf("a redirect carries more than the address:\n%s", body)
				}
				return
			}
			switch s := d.Response.Action.Settings; {
			case tc.url == "" && (s != nil || d.Response.Action.Error == nil):
				t.Errorf("want the protocol's error, got %s", body)
			case tc.url != "" && (s == nil || s.Server[0].URL != tc.url):
				t.Errorf("want %s, got %s", tc.url, body)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		assertUnchanged(t, "mobilesync", post(h, "nobody@example.com"), post(plain, "nobody@example.com"))
	})
}

// The v2 endpoint sends AutodiscoverV1 to this server's POX for everyone
// (whose answer redirects the user), and EWS and ActiveSync to the
// destination's services.
func TestDestinationAutodiscoverV2(t *testing.T) {
	h, plain := destHandlers(t)
	for _, tc := range []struct {
		user, proto string
		status      int
		url         string
	}{
		{"alice", "EWS", 200, "https://mail.example.com/EWS/Exchange.asmx"},
		{"mia", "EWS", 200, m365EWS},
		{"mia", "ActiveSync", 200, m365ActiveSync},
		{"mia", "AutodiscoverV1", 200, "https://autodiscover.example.com/autodiscover/autodiscover.xml"},
		{"pat", "EWS", 200, m365EWS},
		{"sam", "EWS", 400, ""}, // site-b has no EWS: never the domain's
		{"sam", "ActiveSync", 400, ""},
	} {
		t.Run(tc.user+"/"+tc.proto, func(t *testing.T) {
			rec := get(t, h, http.MethodGet, "", "/autodiscover/autodiscover.json/v1.0/"+tc.user+"@example.com?Protocol="+tc.proto)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status != 200 {
				var e v2Error
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.ErrorCode != "InvalidProtocol" || strings.Contains(e.ErrorMessage, "Ews") {
					t.Errorf("%s", rec.Body)
				}
				return
			}
			var ans v2Answer
			if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || ans.URL != tc.url {
				t.Errorf("%s, want Url %s", rec.Body, tc.url)
			}
		})
	}
	// With require_auth nothing per user goes out unauthenticated: the
	// domain's offer, whoever asks, and no directory search.
	t.Run("require_auth", func(t *testing.T) {
		opts := AutodiscoverOptions{RequireAuth: true}
		if err := opts.Prepare(); err != nil {
			t.Fatal(err)
		}
		res := newDestResolver(t)
		ha := NewHandler(res, Options{Autodiscover: opts})
		for _, user := range []string{"mia", "nobody"} {
			rec := get(t, ha, http.MethodGet, "", "/autodiscover/autodiscover.json/v1.0/"+user+"@example.com?Protocol=EWS")
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), "https://mail.example.com/EWS/Exchange.asmx") {
				t.Errorf("%s: %d %s", user, rec.Code, rec.Body)
			}
		}
		if n := res.searches.Load(); n != 0 {
			t.Errorf("%d directory searches", n)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		for _, p := range []string{"EWS", "ActiveSync", "AutodiscoverV1", "Nonsense"} {
			target := "/autodiscover/autodiscover.json?Email=nobody@example.com&Protocol=" + p
			assertUnchanged(t, p, get(t, h, http.MethodGet, "", target).Body.Bytes(), get(t, plain, http.MethodGet, "", target).Body.Bytes())
		}
	})
}

func autoconfigFor(t *testing.T, h http.Handler, addr string) []byte {
	t.Helper()
	rec := get(t, h, http.MethodGet, "", "/mail/config-v1.1.xml?emailaddress="+addr)
	if rec.Code != 200 {
		t.Fatalf("%s: status %d", addr, rec.Code)
	}
	return rec.Body.Bytes()
}

// Thunderbird sets up the destination's servers: the graph server for a
// user the rules entitle to it, none for one without; OAuth2 on
// Microsoft's hosts, which it knows (quirks 37, 38).
func TestDestinationAutoconfig(t *testing.T) {
	h, plain := destHandlers(t)
	for _, tc := range []struct {
		user, golden  string
		incoming      string // Thunderbird desktop's incoming servers, default first
		graph, issuer string
		display       string
	}{
		{"alice", "", "imap,pop3,ews", "", "login.example.com", "Example Mail"},
		{"mia", "mia-m365", "imap,pop3,ews,graph", m365Graph, "login.microsoftonline.com", "Microsoft 365"},
		{"pat", "pat-nopop", "imap,ews", "", "login.microsoftonline.com", "Microsoft 365"},
		{"sam", "sam-siteb", "imap", "", "", "Example Site B"},
	} {
		t.Run(tc.user, func(t *testing.T) {
			body := autoconfigFor(t, h, tc.user+"@example.com")
			if tc.golden != "" {
				golden(t, "autoconfig/destination-"+tc.golden+".xml", body)
			}
			root := parseXMLTree(t, body)
			in, out, err := thunderbirdReadXML(root, nil)
			if err != nil {
				t.Fatalf("Thunderbird rejects it: %v\n%s", err, body)
			}
			var types []string
			graph := ""
			for _, s := range in {
				types = append(types, s.Type)
				if s.Type == "graph" {
					graph = s.ExchangeURL
					if s.Auth != "OAuth2" || s.Hostname != "graph.microsoft.com" || s.Socket != "SSL" || s.Username != tc.user+"@example.com" {
						t.Errorf("graph server %+v", s)
					}
				}
				if tc.user == "pat" && s.Type == "pop3" {
					t.Error("POP3 offered to a user without it")
				}
			}
			if got := strings.Join(types, ","); got != tc.incoming {
				t.Errorf("incoming %s, want %s", got, tc.incoming)
			}
			if graph != tc.graph {
				t.Errorf("graph URL %q, want %q", graph, tc.graph)
			}
			if tc.user == "mia" && (out[0].Hostname != "smtp.office365.com" || out[0].Auth != "OAuth2") {
				t.Errorf("outgoing %+v", out[0])
			}
			if tc.user == "sam" && (in[0].Hostname != "imap.site-b.example.net" || out[0].Hostname != "smtp.site-b.example.net") {
				t.Errorf("site-b servers %+v %+v", in[0], out[0])
			}
			issuer := ""
			if o, ok := root.first("oAuth2"); ok {
				if i, ok := o.first("issuer"); ok {
					issuer = i.Text
				}
			}
			if issuer != tc.issuer {
				t.Errorf("oAuth2 issuer %q, want %q (the destination's, not the domain's)", issuer, tc.issuer)
			}
			if p, _ := root.first("emailProvider"); p != nil {
				if dn, _ := p.first("displayName"); dn == nil || dn.Text != tc.display {
					t.Errorf("displayName %v, want %s", dn, tc.display)
				}
			}
			// Android sets up the imap and smtp servers and passes over the rest.
			if ain, _, err := thunderbirdAndroidRead(root); err != nil || ain[0].Hostname != in[0].Hostname {
				t.Errorf("Thunderbird for Android: %v %+v", err, ain)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		assertUnchanged(t, "autoconfig", autoconfigFor(t, h, "nobody@example.com"), autoconfigFor(t, plain, "nobody@example.com"))
		base := NewHandler(newDestResolverOver(t, demoDomains()), Options{})
		want, err := os.ReadFile(filepath.Join("testdata", "autoconfig", "nobody.xml"))
		if err != nil {
			t.Fatal(err)
		}
		assertUnchanged(t, "autoconfig golden", autoconfigFor(t, base, "nobody@example.com"), want)
	})
}

// Thunderbird takes OAuth2 only for hosts OAuth2Providers knows, walking
// up to parent domains, and only for types it has scopes for (quirk 38):
// on any other host a server offering only OAuth2 is dropped.
func TestDestinationThunderbirdOAuth2Hosts(t *testing.T) {
	for _, tc := range []struct {
		host, typ string
		ok        bool
	}{
		{"outlook.office365.com", "imap", true},
		{"smtp.office365.com", "smtp", true},
		{"graph.microsoft.com", "graph", true},
		{"outlook.office365.com", "ews", true},
		{"imap.gmail.com", "imap", true},
		{"imap.gmail.com", "ews", false},
		{"mail.example.com", "imap", false},
		{"login.microsoftonline.com.evil.example", "imap", false},
	} {
		if got := thunderbirdHasOAuth(tc.host, tc.typ); got != tc.ok {
			t.Errorf("%s %s: %v, want %v", tc.host, tc.typ, got, tc.ok)
		}
	}
	// mia's answer with her tenant's hosts replaced by the site's own:
	// OAuth2-only servers there are all dropped, and the document with them.
	body := autoconfigFor(t, NewHandler(newDestResolver(t), Options{}), "mia@example.com")
	moved := strings.NewReplacer("office365.com", "site-b.example.net", "graph.microsoft.com", "graph.site-b.example.net").Replace(string(body))
	if _, _, err := thunderbirdReadXML(parseXMLTree(t, []byte(moved)), nil); err == nil {
		t.Error("Thunderbird accepted OAuth2 for hosts it has no OAuth details for")
	}
}

// exchangelib follows the m365 user's redirect to the tenant address and
// carries on there; it cannot follow a redirectUrl, whose element it reads
// under another spelling (quirk 34).
func TestDestinationExchangelibFollowsRedirect(t *testing.T) {
	h, plain := destHandlers(t)
	tenant := &policy.Account{
		Address: policy.Address{Local: "mia", Domain: "contoso.mail.onmicrosoft.com"}, Primary: "mia@contoso.onmicrosoft.com",
		Known: true, Domain: &policy.Domain{Name: "contoso.mail.onmicrosoft.com"},
		Services: []policy.Service{{Kind: policy.EWS, URL: m365EWS, Auth: []policy.Auth{policy.AuthOAuth2}, Login: "mia@contoso.onmicrosoft.com"}},
	}
	tenantAnswer, _, err := renderOutlook(tenant)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	ask := func(srv http.Handler) func(string) []byte {
		return func(email string) []byte {
			asked = append(asked, email)
			if strings.HasSuffix(email, "@contoso.mail.onmicrosoft.com") {
				return tenantAnswer // Microsoft's service for the tenant domain
			}
			return adPost(t, srv, "", poxPath, adRequest(email, adOutlookSchema)).Body.Bytes()
		}
	}
	primary, ews, err := exchangelibDiscover("mia@example.com", ask(h))
	if err != nil || primary != "mia@contoso.onmicrosoft.com" || ews != m365EWS {
		t.Errorf("exchangelib: %q %q %v", primary, ews, err)
	}
	if want := []string{"mia@example.com", "mia@contoso.mail.onmicrosoft.com"}; !slices.Equal(asked, want) {
		t.Errorf("asked %v, want %v", asked, want)
	}
	if _, _, err := exchangelibDiscover("ron@example.com", ask(h)); err == nil || !strings.Contains(err.Error(), "no EWS URL") {
		t.Errorf("exchangelib followed a redirectUrl it cannot read: %v", err)
	}
	// The emulation refuses a loop, as exchangelib does.
	loop := func(string) []byte {
		b, _, _ := renderOutlook(&policy.Account{Known: true, Domain: tenant.Domain, Destination: &policy.Destination{RedirectAddr: "mia@example.com"}})
		return b
	}
	if _, _, err := exchangelibDiscover("mia@example.com", loop); err == nil || err.Error() != "AutoDiscoverCircularRedirect" {
		t.Errorf("loop: %v", err)
	}
	// The unknown address gets what it got before: domain settings with EWS.
	for _, srv := range []http.Handler{h, plain} {
		asked = nil
		primary, ews, err := exchangelibDiscover("nobody@example.com", ask(srv))
		if err != nil || primary != "nobody@example.com" || ews != "https://mail.example.com/EWS/Exchange.asmx" || len(asked) != 1 {
			t.Errorf("unknown address: %q %q %v, asked %v", primary, ews, err, asked)
		}
	}
}

func profileFor(t *testing.T, h http.Handler, addr, platform string) (body []byte, types []string, payloads []map[string]any) {
	t.Helper()
	target := "/mobileconfig?emailaddress=" + addr
	if platform != "" {
		target += "&platform=" + platform
	}
	rec := get(t, h, http.MethodGet, "", target)
	if rec.Code != 200 {
		t.Fatalf("%s: status %d: %s", addr, rec.Code, rec.Body)
	}
	var p struct{ PayloadContent []map[string]any }
	if _, err := plist.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	for _, pl := range p.PayloadContent {
		types = append(types, pl["PayloadType"].(string))
	}
	return rec.Body.Bytes(), types, p.PayloadContent
}

// The profile carries the destination's servers under its provider's
// name: a Microsoft 365 user's ActiveSync (Apple's mail payload has no
// OAuth2, so the OAuth-only IMAP cannot go in), a site-b user's IMAP and
// SMTP.
func TestDestinationAppleProfile(t *testing.T) {
	h, plain := destHandlers(t)
	for _, tc := range []struct {
		user  string
		types string
		check func(t *testing.T, p []map[string]any)
	}{
		{"alice", "com.apple.mail.managed,com.apple.eas.account", nil},
		{"mia", "com.apple.eas.account", func(t *testing.T, p []map[string]any) {
			if p[0]["Host"] != "outlook.office365.com" {
				t.Errorf("EAS host %v", p[0]["Host"])
			}
		}},
		{"pat", "com.apple.eas.account", nil},
		{"sam", "com.apple.mail.managed", func(t *testing.T, p []map[string]any) {
			if p[0]["IncomingMailServerHostName"] != "imap.site-b.example.net" || p[0]["OutgoingMailServerHostName"] != "smtp.site-b.example.net" ||
				p[0]["EmailAccountDescription"] != "Example Site B" || p[0]["EmailAccountType"] != "EmailTypeIMAP" {
				t.Errorf("mail payload %v", p[0])
			}
		}},
		{"ron", "com.apple.mail.managed", nil},
	} {
		t.Run(tc.user, func(t *testing.T) {
			body, types, p := profileFor(t, h, tc.user+"@example.com", "")
			if got := strings.Join(types, ","); got != tc.types {
				t.Errorf("payloads %s, want %s", got, tc.types)
			}
			if bytes.Contains(body, []byte("EmailTypePOP")) || (tc.user != "alice" && bytes.Contains(body, []byte("mail.example.com"))) {
				t.Errorf("the domain's own servers or POP in a destination's profile:\n%s", body)
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		a, _, _ := profileFor(t, h, "nobody@example.com", "")
		b, _, _ := profileFor(t, plain, "nobody@example.com", "")
		assertUnchanged(t, "profile", a, b)
	})
}

// The setup page shows the destination's provider, servers and OAuth
// issuer, Graph to those entitled, no POP3 to those without.
func TestDestinationSetupPage(t *testing.T) {
	h, plain := destHandlers(t)
	for _, tc := range []struct {
		user       string
		has, hasNo []string
	}{
		{"alice", []string{"login.example.com", "mail.example.com"}, []string{`class="provider"`, "Microsoft Graph"}},
		{"mia", []string{`<span class="provider-name">Microsoft 365</span>`, "outlook.office365.com", "Microsoft Graph",
			`<dd class="url">https://graph.microsoft.com</dd>`, "https://login.microsoftonline.com/organizations/v2.0"},
			[]string{"login.example.com", "mail.example.com"}},
		{"pat", []string{"Microsoft 365", "Incoming mail (IMAP)"}, []string{"POP3", "Microsoft Graph", "mail.example.com"}},
		{"sam", []string{"Example Site B", "imap.site-b.example.net", "smtp.site-b.example.net"},
			[]string{"OAuth2</h3>", "mail.example.com", "Exchange Web Services"}},
	} {
		t.Run(tc.user, func(t *testing.T) {
			body := get(t, h, http.MethodGet, "", "/?emailaddress="+tc.user+"@example.com").Body.String()
			assertBody(t, body, tc.has, tc.hasNo)
		})
	}
	t.Run("unknown", func(t *testing.T) {
		target := "/?emailaddress=nobody@example.com"
		assertUnchanged(t, "setup page", get(t, h, http.MethodGet, "", target).Body.Bytes(), get(t, plain, http.MethodGet, "", target).Body.Bytes())
	})
}

// A cached answer is keyed by the account it was made for: an account
// with a destination never shares the entry of its domain's defaults for
// the same address and login, though its services are the same.
func TestDestinationRenderCacheKeys(t *testing.T) {
	res := newDestResolver(t)
	d := res.domains["example.com"]
	addr := policy.Address{Local: "nobody", Domain: d.Name}
	defaults := d.DefaultAccount(addr, addr.String())
	moved := *defaults
	moved.Destination = &policy.Destination{Name: "site-b", Provider: "Example Site B"}
	rc := newRenderCache()
	a, err := rc.render(defaults, formatAutoconfig)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rc.render(&moved, formatAutoconfig)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.body, b.body) || !bytes.Contains(b.body, []byte("Example Site B")) {
		t.Errorf("the destination's account got the defaults' cached answer:\n%s", b.body)
	}
	// Known accounts: each its own entry, and the same entry again.
	mia, sam := res.accounts["mia@example.com"], res.accounts["sam@example.com"]
	m1, _ := rc.render(mia, formatOutlook)
	s1, _ := rc.render(sam, formatOutlook)
	m2, _ := rc.render(mia, formatOutlook)
	if m1 != m2 || bytes.Equal(m1.body, s1.body) || !bytes.Contains(m1.body, []byte("redirectAddr")) {
		t.Errorf("cache: mia %p/%p, sam's body equal: %v", m1, m2, bytes.Equal(m1.body, s1.body))
	}
}
