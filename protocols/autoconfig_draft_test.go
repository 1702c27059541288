package protocols

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Thunderbird desktop's reader (readFromXML.sys.mjs, CLIENTS.md §1.8,
// quirk 26) turns an entitled user's answer into an EWS server with the
// URL, offered after the services the domain prefers; a user the rules
// do not entitle gets none.
func TestThunderbirdReadsEWS(t *testing.T) {
	h := NewHandler(newDraftResolver(t), Options{})
	for _, tc := range []struct {
		addr     string
		incoming string // types in Thunderbird's order: default first
		ewsLogin string // "" for no EWS server
	}{
		{"alice@example.com", "imap,pop3,ews", "alice"},
		{"bob@example.com", "imap", ""},
		// Unknown addresses get the domain's defaults, as real ones do.
		{"nobody@example.com", "imap,pop3,ews", "nobody@example.com"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			rec := get(t, h, http.MethodGet, "", "/mail/config-v1.1.xml?emailaddress="+tc.addr)
			in, out, err := thunderbirdReadXML(parseXMLTree(t, rec.Body.Bytes()), nil)
			if err != nil {
				t.Fatalf("Thunderbird rejects the answer: %v\n%s", err, rec.Body)
			}
			var types []string
			var ews *tbServer
			for i, s := range in {
				types = append(types, s.Type)
				if s.Type == "ews" {
					ews = &in[i]
				}
			}
			if got := strings.Join(types, ","); got != tc.incoming {
				t.Errorf("incoming %s, want %s", got, tc.incoming)
			}
			if len(out) == 0 || out[0].Type != "smtp" {
				t.Errorf("outgoing %+v", out)
			}
			if tc.ewsLogin == "" {
				if ews != nil {
					t.Errorf("not entitled, but offered EWS %+v", *ews)
				}
				return
			}
			want := tbServer{Type: "ews", Hostname: "mail.example.com", Username: tc.ewsLogin, Socket: "SSL",
				Auth: "password-cleartext", ExchangeURL: "https://mail.example.com/EWS/Exchange.asmx"}
			if ews == nil || *ews != want {
				t.Errorf("EWS server %+v, want %+v", ews, want)
			}
		})
	}
}

// Every autoconfig answer we pin keeps being read by Thunderbird for
// Android (quirks 8, 27), Thunderbird desktop and KMail, which ignore the
// draft's elements they do not know: the ews block and <oAuth2> change
// nothing of what they set up.
func TestAutoconfigParsersReadEveryAnswer(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "autoconfig", "*.xml"))
	if err != nil || len(files) < 10 {
		t.Fatalf("golden answers: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			root := parseXMLTree(t, body)
			if v := root.Attrs["version"]; v != "1.1" {
				t.Errorf(`version %q: thunderbird/autoconfig's validator accepts only "1.1"`, v)
			}
			ain, aout, err := thunderbirdAndroidRead(root)
			if err != nil {
				t.Fatalf("Thunderbird for Android rejects it: %v", err)
			}
			tin, tout, err := thunderbirdReadXML(root, nil)
			if err != nil {
				t.Fatalf("Thunderbird rejects it: %v", err)
			}
			if ain[0].Hostname != tin[0].Hostname || aout[0].Hostname != tout[0].Hostname {
				t.Errorf("Android %+v and desktop %+v set up different servers", ain[0], tin[0])
			}
			kde := kdeRead(root)
			for _, s := range kde {
				if !strings.HasPrefix(s, "imap:") && !strings.HasPrefix(s, "pop3:") && !strings.HasPrefix(s, "smtp:") {
					t.Errorf("KMail read %s", s)
				}
			}
			if len(kde) == 0 {
				t.Error("KMail finds no server")
			}
		})
	}
}

// The draft's elements are safe only where each parser passes over them:
// the parsers must actually reject what they are said to reject, or the
// test above proves nothing.
func TestClientParserEmulationsReject(t *testing.T) {
	ok, err := os.ReadFile(filepath.Join("testdata", "autoconfig", "alice-ews.xml"))
	if err != nil {
		t.Fatal(err)
	}
	good := string(ok)
	for _, tc := range []struct {
		name, body    string
		android, desk bool // rejected by each
		ews           bool // desktop reads the ews block
	}{
		{"as served", good, false, false, true},
		{"url-style ews block typed imap", strings.Replace(good, `type="ews"`, `type="imap"`, 1), true, false, false},
		{"plain socket in imap", strings.Replace(good, "<socketType>SSL</socketType>", "<socketType>plain</socketType>", 1), true, false, true},
		{"https as socketType", strings.Replace(good, "<socketType>SSL</socketType>", "<socketType>https</socketType>", 1), true, false, true},
		{"no outgoing", good[:strings.Index(good, "<outgoingServer")] + good[strings.LastIndex(good, "</outgoingServer>")+len("</outgoingServer>"):], true, true, false},
		{"ews with the draft's Basic only", strings.Replace(good, "<authentication>password-cleartext</authentication>\n      <authentication system=\"http\">", "<authentication system=\"http\">", 1), false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := parseXMLTree(t, []byte(tc.body))
			_, _, aerr := thunderbirdAndroidRead(root)
			in, _, derr := thunderbirdReadXML(root, nil)
			if (aerr != nil) != tc.android || (derr != nil) != tc.desk {
				t.Errorf("android err %v (want rejected=%v), desktop err %v (want rejected=%v)", aerr, tc.android, derr, tc.desk)
			}
			if got := slices.ContainsFunc(in, func(s tbServer) bool { return s.Type == "ews" }); got != tc.ews {
				t.Errorf("desktop reads the ews block: %v, want %v", got, tc.ews)
			}
		})
	}
}

// <oAuth2> names the domain's issuer; services say OAuth2 only where
// configured (the demo's say nothing, so password-cleartext).
func TestAutoconfigOAuth2Element(t *testing.T) {
	rec := get(t, NewHandler(newDraftResolver(t), Options{}), http.MethodGet, "", "/mail/config-v1.1.xml?emailaddress=bob@example.com")
	root := parseXMLTree(t, rec.Body.Bytes())
	o, ok := root.first("oAuth2")
	if !ok {
		t.Fatalf("no <oAuth2>:\n%s", rec.Body)
	}
	got := map[string]string{}
	for _, c := range o.Children {
		got[c.Name] = c.Text
	}
	if got["issuer"] != "login.example.com" || got["clientID"] != "mail-apps" || got["scope"] != "IMAP POP SMTP EWS offline_access" {
		t.Errorf("oAuth2 %v", got)
	}
	if strings.Contains(rec.Body.String(), "<authentication>OAuth2</authentication>") {
		t.Error("a service says OAuth2 though none is configured with it")
	}
	// Without oauth, no element.
	res, _ := newDemoResolver(t, demoDomains())
	if rec := get(t, NewHandler(res, Options{}), http.MethodGet, "", "/mail/config-v1.1.xml?emailaddress=bob@example.com"); strings.Contains(rec.Body.String(), "oAuth2") {
		t.Errorf("oAuth2 without oauth configured:\n%s", rec.Body)
	}
}

// The setup page shows the EWS URL to those the rules entitle, and the
// domain's OAuth issuer and client ID to everyone.
func TestSetupPageEWSAndOAuth(t *testing.T) {
	h := NewHandler(newDraftResolver(t), Options{})
	for _, tc := range []struct {
		addr       string
		has, hasNo []string
	}{
		{"alice@example.com", []string{"Exchange Web Services (EWS)", `<dd class="url">https://mail.example.com/EWS/Exchange.asmx</dd>`,
			"Sign-in with OAuth2", `<dd class="url">https://login.example.com/</dd>`, `<dd class="client-id">mail-apps</dd>`,
			`<dd class="scopes">IMAP POP SMTP EWS offline_access</dd>`, "also offer Exchange (EWS)"}, nil},
		{"bob@example.com", []string{"Sign-in with OAuth2", `<dd class="client-id">mail-apps</dd>`},
			[]string{"Exchange Web Services", "EWS/Exchange.asmx", "also offer Exchange"}},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			rec := get(t, h, http.MethodGet, "", "/?emailaddress="+tc.addr)
			body := rec.Body.String()
			assertBody(t, body, tc.has, tc.hasNo)
		})
	}
	res, _ := newDemoResolver(t, demoDomains())
	if body := get(t, NewHandler(res, Options{}), http.MethodGet, "", "/?emailaddress=alice@example.com").Body.String(); strings.Contains(body, "OAuth2</h3>") {
		t.Error("OAuth shown for a domain without oauth")
	}
}

// Outlook's answer carries EXCH/EXPR only for users the rules entitle to
// EWS, first, with the URL of the EWS service.
func TestOutlookEWSPerUser(t *testing.T) {
	h := NewHandler(newDraftResolver(t), Options{})
	for addr, want := range map[string]string{
		"alice@example.com": "EXCH EXPR IMAP POP3 SMTP SMTP",
		"bob@example.com":   "IMAP SMTP SMTP",
	} {
		rec := adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest(addr, adOutlookSchema))
		var types []string
		for _, p := range adParse(t, rec).protocols(t) {
			types = append(types, p.Type)
			if (p.Type == "EXCH" || p.Type == "EXPR") && (p.EwsUrl != "https://mail.example.com/EWS/Exchange.asmx" || p.Server != "mail.example.com") {
				t.Errorf("%s: %s %+v", addr, p.Type, p)
			}
		}
		if got := strings.Join(types, " "); got != want {
			t.Errorf("%s: protocols %s, want %s", addr, got, want)
		}
	}
}

// assertBody fails for each string of has that body lacks and each of
// hasNo that it holds.
func assertBody(t *testing.T, body string, has, hasNo []string) {
	t.Helper()
	for _, s := range has {
		if !strings.Contains(body, s) {
			t.Errorf("lacks %q", s)
		}
	}
	for _, s := range hasNo {
		if strings.Contains(body, s) {
			t.Errorf("has %q", s)
		}
	}
}
