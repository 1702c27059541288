package protocols

import (
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/policy"
)

// ---------------------------------------------------------------------
// Helpers

const (
	adOutlookSchema    = nsOutlookResponse
	adMobilesyncSchema = nsMobilesyncResponse
	adDemoPassword     = "Secret123!"
)

// adRequest is a POX request body as Outlook (or, with the mobilesync
// schema, an ActiveSync device) sends it.
func adRequest(addr, schema string) string {
	ns := nsOutlookRequest
	if schema == adMobilesyncSchema {
		ns = nsMobilesyncRequest
	}
	return `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="` + ns + `">
  <Request>
    <EMailAddress>` + addr + `</EMailAddress>
    <AcceptableResponseSchema>` + schema + `</AcceptableResponseSchema>
  </Request>
</Autodiscover>`
}

// adPost POSTs body to the handler. host "" means 127.0.0.1 (a request by
// IP address, never redirected); headers are name, value pairs.
func adPost(t testing.TB, h http.Handler, host, path, body string, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Host = "127.0.0.1"
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// adDoc is any Autodiscover answer, parsed loosely enough to hold each kind.
type adDoc struct {
	XMLName  xml.Name
	Response struct {
		XMLName xml.Name
		Culture string
		User    struct {
			DisplayName             string
			AutoDiscoverSMTPAddress string
			EMailAddress            string
		}
		Account []outlookAccount
		Action  struct {
			Settings *mobilesyncSettings
			Error    *mobilesyncError
		}
		Error *poxError
	}
}

func adParse(t testing.TB, rec *httptest.ResponseRecorder) adDoc {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/xml; charset=utf-8" {
		t.Errorf("Content-Type %q, want text/xml; charset=utf-8", ct)
	}
	var d adDoc
	if err := xml.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatalf("%v\n%s", err, rec.Body)
	}
	return d
}

// errorCode is the POX ErrorCode of an error answer, or 0.
func (d adDoc) errorCode() int {
	if d.Response.Error == nil {
		return 0
	}
	return d.Response.Error.ErrorCode
}

func (d adDoc) protocols(t testing.TB) []poxProtocol {
	t.Helper()
	if len(d.Response.Account) != 1 {
		t.Fatalf("%d Account elements, want exactly 1", len(d.Response.Account))
	}
	return d.Response.Account[0].Protocol
}

// summary lists Type:Port/LoginName/SSL/Encryption per protocol.
func adSummary(ps []poxProtocol) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, p.Type+":"+strconv.Itoa(p.Port)+"/"+p.LoginName+"/"+p.SSL+"/"+p.Encryption)
	}
	return strings.Join(parts, " ")
}

// adDomains is the demo domain plus variants for EWS, a plain-text
// service and an own autodiscover URL.
func adDomains() []policy.DomainConfig {
	ds := demoDomains()
	ews := demoDomains()[0]
	ews.Name = "ews.example"
	ews.EWSURL = "https://mail.ews.example/EWS/Exchange.asmx"
	plain := policy.DomainConfig{
		Name: "plain.example", AutodiscoverURL: "https://config.plain.example/Autodiscover/Autodiscover.xml",
		Services: []policy.ServiceConfig{
			{Type: "imap", Host: "mail.plain.example", Port: 143, Socket: "plain"},
			{Type: "smtp", Host: "mail.plain.example", Port: 25, Socket: "plain", Auth: []string{"password-encrypted"}},
		},
	}
	return append(ds, ews, plain)
}

// overPlain serves h as the plain-HTTP listener of a TLS-serving server
// does (server.http_listen): the redirect probe redirects.
func overPlain(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(OverPlainHTTP(r.Context())))
	})
}

func adResolver(t testing.TB) (*fakeResolver, *fakeResolver) {
	t.Helper()
	return newDemoResolver(t, adDomains())
}

func adHandler(t testing.TB, opts AutodiscoverOptions) (*Handler, *fakeResolver) {
	t.Helper()
	if err := opts.Prepare(); err != nil {
		t.Fatal(err)
	}
	res, dir := adResolver(t)
	return NewHandler(res, Options{Autodiscover: opts}), dir
}

// ---------------------------------------------------------------------
// Golden files: one per response kind

func TestAutodiscoverGolden(t *testing.T) {
	h, _ := adHandler(t, AutodiscoverOptions{})
	for _, tc := range []struct{ name, addr, schema string }{
		{"outlook-alice", "alice@example.com", adOutlookSchema},
		{"outlook-alice-alias", "a.example@example.com", adOutlookSchema},
		{"outlook-bob", "bob@example.com", adOutlookSchema},
		{"outlook-carol-disabled", "carol@example.com", adOutlookSchema},
		{"outlook-nobody", "nobody@example.com", adOutlookSchema},
		{"outlook-dave-mailhost", "dave@example.com", adOutlookSchema},
		{"outlook-plain", "someone@plain.example", adOutlookSchema},
		{"mobilesync-alice", "alice@example.com", adMobilesyncSchema},
		{"mobilesync-bob", "bob@example.com", adMobilesyncSchema},
		{"mobilesync-unknown-domain", "x@unknown.example", adMobilesyncSchema},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest(tc.addr, tc.schema), "Content-Type", "text/xml")
			adParse(t, rec)
			golden(t, "autodiscover/"+tc.name+".xml", rec.Body.Bytes())
		})
	}
	// Exchange-style URLs for a domain that opts in, for a known user.
	t.Run("outlook-ews", func(t *testing.T) {
		ds := demoDomains()
		ds[0].EWSURL = "https://mail.example.com/EWS/Exchange.asmx"
		ds[0].OOFURL = "https://mail.example.com/EWS/OOF.asmx"
		res, _ := newDemoResolver(t, ds)
		rec := adPost(t, NewHandler(res, Options{}), "", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", adOutlookSchema))
		adParse(t, rec)
		golden(t, "autodiscover/outlook-ews.xml", rec.Body.Bytes())
	})
	// Error documents carry the time; render them at a fixed one.
	at := time.Date(2026, 3, 4, 21, 25, 4, 889708300, time.UTC)
	for _, code := range []int{poxErrNotFound, poxErrInvalid, poxErrSchema, poxErrInternalError} {
		t.Run("error-"+strconv.Itoa(code), func(t *testing.T) {
			body, err := renderPOXError(code, at, serverID("mail.example.com"))
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "autodiscover/error-"+strconv.Itoa(code)+".xml", body)
		})
	}
	for _, tc := range []struct{ name, target string }{
		{"json-autodiscoverv1", "/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=AutodiscoverV1&RedirectCount=1"},
		{"json-activesync", "/autodiscover/autodiscover.json/v1.0/alice@example.com?Protocol=ActiveSync"},
		{"json-ews", "/autodiscover/autodiscover.json/v1.0/alice@ews.example?Protocol=EWS"},
		{"json-invalid-protocol", "/autodiscover/autodiscover.json?Email=bob@example.com&Protocol=Nonsense"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, h, http.MethodGet, "", tc.target)
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			golden(t, "autodiscover/"+tc.name+".json", rec.Body.Bytes())
		})
	}
}

// ---------------------------------------------------------------------
// The "done when", on parsed documents

func TestAutodiscoverDemoContract(t *testing.T) {
	h, _ := adHandler(t, AutodiscoverOptions{})
	for _, path := range []string{"/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"} {
		d := adParse(t, adPost(t, h, "", path, adRequest("bob@example.com", adOutlookSchema), "Content-Type", "text/xml; charset=utf-8"))
		got := adSummary(d.protocols(t))
		want := "IMAP:993/bob.login/on/SSL SMTP:465/bob.login/on/SSL SMTP:587/bob.login/on/TLS"
		if got != want {
			t.Errorf("%s: bob gets\n  %s\nwant\n  %s", path, got, want)
		}
		if d.Response.User.DisplayName != "Bob Builder" || d.Response.User.AutoDiscoverSMTPAddress != "bob@example.com" {
			t.Errorf("%s: User %+v", path, d.Response.User)
		}
	}
	alice := adParse(t, adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", adMobilesyncSchema)))
	if s := alice.Response.Action.Settings; s == nil || len(s.Server) != 1 || s.Server[0].Type != "MobileSync" ||
		s.Server[0].URL != "https://mail.example.com/Microsoft-Server-ActiveSync" || s.Server[0].Name != s.Server[0].URL {
		t.Errorf("mobilesync alice: settings %+v", alice.Response.Action.Settings)
	}
	bob := adParse(t, adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("bob@example.com", adMobilesyncSchema)))
	if bob.Response.Action.Settings != nil || bob.Response.Action.Error == nil || bob.Response.Action.Error.Status != 2 {
		t.Errorf("mobilesync bob: want no settings and an Action/Error with Status 2, got %+v", bob.Response.Action)
	}
	bad := adParse(t, adPost(t, h, "", "/autodiscover/autodiscover.xml", "<Autodiscover><Request>"))
	if bad.errorCode() != 600 {
		t.Errorf("malformed body: ErrorCode %d, want 600", bad.errorCode())
	}
	rec := get(t, h, http.MethodGet, "", "/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=Autodiscoverv1")
	var ans v2Answer
	if err := json.Unmarshal(rec.Body.Bytes(), &ans); rec.Code != 200 || err != nil ||
		ans.URL != "https://autodiscover.example.com/autodiscover/autodiscover.xml" {
		t.Errorf("v2 Autodiscoverv1: %d %s", rec.Code, rec.Body)
	}
	rec = get(t, h, http.MethodGet, "", "/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=Nonsense")
	var e v2Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); rec.Code != 400 || err != nil || e.ErrorCode != "InvalidProtocol" {
		t.Errorf("v2 Nonsense: %d %s", rec.Code, rec.Body)
	}
}

// ---------------------------------------------------------------------
// The Autodiscover quirks of the CLIENTS.md §6, one subtest each

func TestAutodiscoverQuirks(t *testing.T) {
	h, _ := adHandler(t, AutodiscoverOptions{})
	authH, _ := adHandler(t, AutodiscoverOptions{RequireAuth: true})
	outlook := func(t *testing.T, h http.Handler, addr string, headers ...string) adDoc {
		t.Helper()
		return adParse(t, adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest(addr, adOutlookSchema), headers...))
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"quirk12_thunderbird_request_one_account", func(t *testing.T) {
			// Thunderbird: exact Content-Type, Basic sent pre-emptively
			// (ignored when auth is off), reads only the first Account.
			d := outlook(t, h, "alice@example.com", "Content-Type", "text/xml; charset=utf-8",
				"Authorization", adBasicAuth("alice@example.com", adDemoPassword))
			if got := adSummary(d.protocols(t)); !strings.Contains(got, "IMAP:993") || !strings.Contains(got, "POP3:995") || !strings.Contains(got, "SMTP:587") {
				t.Errorf("first Account lacks protocols: %s", got)
			}
			// With auth on, the pre-emptive header is enough: no 401 first.
			rec := adPost(t, authH, "", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", adOutlookSchema),
				"Content-Type", "text/xml; charset=utf-8", "Authorization", adBasicAuth("alice@example.com", adDemoPassword))
			if rec.Code != http.StatusOK {
				t.Errorf("pre-emptive Basic: status %d", rec.Code)
			}
			// Thunderbird POSTs to the http:// URL without credentials: 302.
			rec = adPost(t, overPlain(h), "autodiscover.example.com", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", adOutlookSchema))
			if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://autodiscover.example.com/autodiscover/autodiscover.xml" {
				t.Errorf("POST over http: %d Location %q", rec.Code, rec.Header().Get("Location"))
			}
		}},
		{"quirk14_http_namespace", func(t *testing.T) {
			for _, schema := range []string{adOutlookSchema, adMobilesyncSchema} {
				rec := adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", schema))
				d := adParse(t, rec)
				wantInner := map[string]string{adOutlookSchema: nsOutlookResponse, adMobilesyncSchema: nsMobilesyncResponse}[schema]
				if d.XMLName.Space != "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006" || d.Response.XMLName.Space != wantInner {
					t.Errorf("namespaces %q / %q", d.XMLName.Space, d.Response.XMLName.Space)
				}
				if strings.Contains(rec.Body.String(), "https://schemas.") {
					t.Errorf("https namespace in answer:\n%s", rec.Body)
				}
			}
			// A client that copied https:// from the POX pages still gets served.
			rec := adPost(t, h, "", "/autodiscover/autodiscover.xml",
				adRequest("alice@example.com", strings.Replace(adOutlookSchema, "http://", "https://", 1)))
			if d := adParse(t, rec); d.errorCode() != 0 || len(d.Response.Account) != 1 {
				t.Errorf("https schema spelling refused: %s", rec.Body)
			}
		}},
		{"quirk15_explicit_on_off", func(t *testing.T) {
			for _, addr := range []string{"alice@example.com", "nobody@example.com", "alice@ews.example", "x@plain.example"} {
				d := outlook(t, h, addr)
				for _, p := range d.protocols(t) {
					for name, v := range map[string]string{"SPA": p.SPA, "SSL": p.SSL, "AuthRequired": p.AuthRequired, "DomainRequired": p.DomainRequired} {
						if v != "on" && v != "off" {
							t.Errorf("%s %s: %s = %q, want exactly on or off", addr, p.Type, name, v)
						}
					}
					if p.Type == "SMTP" && (p.SMTPLast != "off" || (p.UsePOPAuth != "on" && p.UsePOPAuth != "off")) {
						t.Errorf("%s SMTP: SMTPLast %q UsePOPAuth %q", addr, p.SMTPLast, p.UsePOPAuth)
					}
				}
			}
			// Plain passwords: SPA off; an encrypted-only mechanism: SPA on.
			for _, p := range outlook(t, h, "x@plain.example").protocols(t) {
				if want := map[string]string{"IMAP": "off", "SMTP": "on"}[p.Type]; p.SPA != want {
					t.Errorf("plain.example %s: SPA %q, want %q", p.Type, p.SPA, want)
				}
			}
		}},
		{"quirk16_encryption_overrides_ssl", func(t *testing.T) {
			want := map[string]string{"IMAP:993": "on/SSL", "POP3:995": "on/SSL", "SMTP:465": "on/SSL", "SMTP:587": "on/TLS", "IMAP:143": "off/None", "SMTP:25": "off/None"}
			for _, addr := range []string{"alice@example.com", "x@plain.example"} {
				for _, p := range outlook(t, h, addr).protocols(t) {
					key := p.Type + ":" + strconv.Itoa(p.Port)
					if got := p.SSL + "/" + p.Encryption; got != want[key] {
						t.Errorf("%s: SSL/Encryption %s, want %s", key, got, want[key])
					}
				}
			}
		}},
		{"quirk17_paths_any_case_get_and_post_302", func(t *testing.T) {
			for _, path := range []string{"/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml", "/AutoDiscover/AutoDiscover.xml", "/AUTODISCOVER/AUTODISCOVER.XML"} {
				if d := adOutlookAt(t, h, path); len(d.Response.Account) != 1 {
					t.Errorf("%s: no settings", path)
				}
				for _, method := range []string{http.MethodGet, http.MethodPost} {
					for _, host := range []string{"autodiscover.example.com", "Autodiscover.Example.COM:80", "example.com"} {
						rec := get(t, overPlain(h), method, host, path)
						if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://autodiscover.example.com/autodiscover/autodiscover.xml" {
							t.Errorf("%s http://%s%s: %d Location %q", method, host, path, rec.Code, rec.Header().Get("Location"))
						}
					}
				}
			}
			// A domain's own autodiscover_url is the target.
			if rec := get(t, overPlain(h), http.MethodGet, "autodiscover.plain.example", "/autodiscover/autodiscover.xml"); rec.Header().Get("Location") != "https://config.plain.example/Autodiscover/Autodiscover.xml" {
				t.Errorf("own URL: Location %q", rec.Header().Get("Location"))
			}
		}},
		{"quirk18_new_outlook_asks_mobilesync", func(t *testing.T) {
			// New Outlook sends an Outlook-namespace request asking for the
			// mobilesync schema: answer it, don't refuse it.
			body := strings.Replace(adRequest("alice@example.com", adMobilesyncSchema), nsMobilesyncRequest, nsOutlookRequest, 1)
			d := adParse(t, adPost(t, h, "", "/autodiscover/autodiscover.xml", body))
			if d.Response.XMLName.Space != nsMobilesyncResponse || d.Response.Action.Settings == nil {
				t.Errorf("want mobilesync settings, got %+v", d.Response)
			}
		}},
		{"quirk19_v2_protocol_any_case", func(t *testing.T) {
			for _, q := range []string{"Email=alice@example.com&Protocol=Autodiscoverv1", "email=alice%40example.com&protocol=autodiscoverv1",
				"EMAIL=alice@example.com&PROTOCOL=AUTODISCOVERV1"} {
				for _, path := range []string{"/autodiscover/autodiscover.json", "/Autodiscover/Autodiscover.json"} {
					rec := get(t, h, http.MethodGet, "", path+"?"+q)
					if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"Protocol":"AutodiscoverV1"`) {
						t.Errorf("%s?%s: %d %s", path, q, rec.Code, rec.Body)
					}
				}
			}
			rec := get(t, h, http.MethodGet, "", "/autodiscover/autodiscover.json/v1.0/alice@example.com?protocol=activesync")
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "Microsoft-Server-ActiveSync") {
				t.Errorf("v1.0 path, activesync: %d %s", rec.Code, rec.Body)
			}
		}},
		{"quirk22_android_local_part_as_basic_user", func(t *testing.T) {
			// The body's address decides whose password is checked.
			rec := adPost(t, authH, "", "/autodiscover/autodiscover.xml", adRequest("bob@example.com", adOutlookSchema),
				"Authorization", adBasicAuth("bob", adDemoPassword))
			if d := adParse(t, rec); !strings.Contains(adSummary(d.protocols(t)), "bob.login") {
				t.Errorf("bob with local-part user: %s", rec.Body)
			}
		}},
		{"quirk25_outlook2007_reads_ssl", func(t *testing.T) {
			// Outlook 2007 may ignore <Encryption>: <SSL> alone must already
			// say "encrypted" wherever Encryption is not None.
			for _, p := range outlook(t, h, "alice@example.com").protocols(t) {
				if p.Encryption != "None" && p.SSL != "on" {
					t.Errorf("%s:%d: Encryption %s but SSL %s", p.Type, p.Port, p.Encryption, p.SSL)
				}
			}
		}},
		{"quirk6_no_namespace_prefixes", func(t *testing.T) {
			rec := adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("alice@ews.example", adOutlookSchema))
			if regexp.MustCompile(`<[A-Za-z]+:|xmlns:`).MatchString(rec.Body.String()) {
				t.Errorf("namespace prefix in answer:\n%s", rec.Body)
			}
		}},
		{"quirk9_no_bom_in_answer", func(t *testing.T) {
			rec := adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", adOutlookSchema))
			if !strings.HasPrefix(rec.Body.String(), "<?xml") {
				t.Errorf("answer starts with %q", rec.Body.String()[:8])
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
}

func adOutlookAt(t *testing.T, h http.Handler, path string) adDoc {
	t.Helper()
	return adParse(t, adPost(t, h, "", path, adRequest("alice@example.com", adOutlookSchema)))
}

func adBasicAuth(user, pass string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, pass)
	return req.Header.Get("Authorization")
}

// ---------------------------------------------------------------------
// Requests clients really send, and ones nobody should

func TestAutodiscoverRequestVariants(t *testing.T) {
	h, _ := adHandler(t, AutodiscoverOptions{})
	plain := adRequest("alice@example.com", adOutlookSchema)
	noDecl := plain[strings.Index(plain, "<Autodiscover"):]
	for _, tc := range []struct {
		name, body, contentType string
	}{
		{"content_type_text_xml", plain, "text/xml"},
		{"content_type_text_xml_utf8", plain, "text/xml; charset=utf-8"},
		{"content_type_text_xml_UTF8", plain, "text/xml; charset=UTF-8"},
		{"content_type_application_xml", plain, "application/xml"},
		{"content_type_none", plain, ""},
		{"content_type_curl_form", plain, "application/x-www-form-urlencoded"},
		{"no_xml_declaration", noDecl, "text/xml"},
		{"decl_UTF-8", `<?xml version="1.0" encoding="UTF-8"?>` + noDecl, "text/xml"},
		{"decl_utf8", `<?xml version="1.0" encoding="utf8"?>` + noDecl, "text/xml"},
		{"decl_Utf_8", `<?xml version='1.0' encoding='Utf_8'?>` + noDecl, "text/xml"},
		{"decl_us-ascii", `<?xml version="1.0" encoding="us-ascii"?>` + noDecl, "text/xml"},
		{"decl_iso-8859-1", `<?xml version="1.0" encoding="ISO-8859-1"?>` + noDecl, "text/xml"},
		{"utf8_bom", "\xEF\xBB\xBF" + plain, "text/xml"},
		{"no_namespace", strings.Replace(plain, ` xmlns="`+nsOutlookRequest+`"`, "", 1), "text/xml"},
		{"legacydn_and_address", strings.Replace(plain, "<EMailAddress>", "<LegacyDN>/o=First Organization/cn=alice</LegacyDN><EMailAddress>", 1), "text/xml"},
		{"crlf_and_spaces", strings.ReplaceAll(strings.Replace(plain, "alice@example.com", "\r\n  alice@example.com \r\n", 1), "\n", "\r\n"), "text/xml"},
		{"upper_case_address", strings.Replace(plain, "alice@example.com", "Alice@Example.COM", 1), "text/xml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.contentType != "" {
				hdr = []string{"Content-Type", tc.contentType}
			}
			d := adParse(t, adPost(t, h, "", "/autodiscover/autodiscover.xml", tc.body, hdr...))
			if d.errorCode() != 0 || d.Response.User.AutoDiscoverSMTPAddress != "alice@example.com" || len(d.protocols(t)) != 4 {
				t.Errorf("want alice's 4 protocols, got error %d, user %+v", d.errorCode(), d.Response.User)
			}
		})
	}
}

func TestAutodiscoverBadInput(t *testing.T) {
	h, _ := adHandler(t, AutodiscoverOptions{})
	good := adRequest("alice@example.com", adOutlookSchema)
	for _, tc := range []struct {
		name, method, body string
		wantStatus         int
		wantCode           int // POX ErrorCode when 200
	}{
		{"empty_body", "POST", "", 200, 600},
		{"whitespace_body", "POST", " \r\n ", 200, 600},
		{"not_xml", "POST", "EMailAddress=alice@example.com", 200, 600},
		{"truncated", "POST", good[:len(good)-20], 200, 600},
		{"wrong_root", "POST", strings.ReplaceAll(good, "Autodiscover", "Discover"), 200, 600},
		{"doctype", "POST", `<?xml version="1.0"?><!DOCTYPE Autodiscover [<!ENTITY x "alice@example.com">]>` + good[strings.Index(good, "<Autodiscover"):], 200, 600},
		{"xxe_external_entity", "POST", `<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>`, 200, 600},
		{"undefined_entity", "POST", strings.Replace(good, "alice@example.com", "&x;", 1), 200, 600},
		{"two_roots", "POST", good + "<Autodiscover/>", 200, 600},
		{"text_after_root", "POST", good + "junk", 200, 600},
		{"email_twice", "POST", strings.Replace(good, "<AcceptableResponseSchema>", "<EMailAddress>bob@example.com</EMailAddress><AcceptableResponseSchema>", 1), 200, 600},
		{"no_address", "POST", strings.Replace(good, "<EMailAddress>alice@example.com</EMailAddress>", "", 1), 200, 600},
		{"invalid_address", "POST", strings.Replace(good, "alice@example.com", "alice example.com", 1), 200, 600},
		{"unknown_encoding", "POST", `<?xml version="1.0" encoding="x-klingon"?>` + good[strings.Index(good, "<Autodiscover"):], 200, 600},
		{"deep_nesting", "POST", "<Autodiscover>" + strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100) + "</Autodiscover>", 200, 600},
		{"unsupported_schema", "POST", adRequest("alice@example.com", "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006"), 200, 601},
		{"unknown_domain", "POST", adRequest("alice@unknown.example", adOutlookSchema), 200, 500},
		{"legacydn_only", "POST", strings.Replace(good, "<EMailAddress>alice@example.com</EMailAddress>", "<LegacyDN>/o=Org/cn=alice</LegacyDN>", 1), 200, 500},
		{"get_by_ip", "GET", "", 200, 600},
		{"too_large", "POST", good + strings.Repeat(" ", maxPOXBody), 413, 0},
		{"put", "PUT", good, 405, 0},
		{"options", "OPTIONS", "", 405, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "/autodiscover/autodiscover.xml", strings.NewReader(tc.body))
			req.Host = "127.0.0.1"
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if tc.wantStatus == 200 {
				if got := adParse(t, rec).errorCode(); got != tc.wantCode {
					t.Errorf("ErrorCode %d, want %d:\n%s", got, tc.wantCode, rec.Body)
				}
			}
			if strings.Contains(rec.Body.String(), "passwd") || strings.Contains(rec.Body.String(), "klingon") {
				t.Errorf("request content echoed:\n%s", rec.Body)
			}
		})
	}
	// Declared size over the limit is refused before reading.
	req := httptest.NewRequest(http.MethodPost, "/autodiscover/autodiscover.xml", strings.NewReader(good))
	req.Host = "127.0.0.1"
	req.ContentLength = maxPOXBody + 1
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("Content-Length over limit: %d", rec.Code)
	}
}

// Nothing from the request reaches an answer unescaped; error documents
// hold no request data at all.
func TestAutodiscoverNoEcho(t *testing.T) {
	h, _ := adHandler(t, AutodiscoverOptions{})
	evil := `<script>alert(1)</script>`
	body := strings.Replace(adRequest("alice@example.com", adOutlookSchema), "alice@example.com", "&lt;script&gt;alert(1)&lt;/script&gt;@example.com", 1)
	rec := adPost(t, h, "", "/autodiscover/autodiscover.xml", body)
	if strings.Contains(rec.Body.String(), "script") {
		t.Errorf("echoed:\n%s", rec.Body)
	}
	rec = adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", "urn:"+evil))
	if strings.Contains(rec.Body.String(), "script") || adParse(t, rec).errorCode() != 601 {
		t.Errorf("schema echoed or not 601:\n%s", rec.Body)
	}
	for _, q := range []string{"Protocol=" + "%3Cscript%3E", "Protocol=" + strings.Repeat("A", 200)} {
		rec = get(t, h, http.MethodGet, "", "/autodiscover/autodiscover.json?Email=alice@example.com&"+q)
		if rec.Code != 400 || strings.Contains(rec.Body.String(), "script") || strings.Contains(rec.Body.String(), "AAAAA") {
			t.Errorf("%s: %d %s", q, rec.Code, rec.Body)
		}
	}
	// The error Id is the same whatever the request, and Time is Exchange's format.
	var ids []string
	for _, b := range []string{"", "<x/>", adRequest("nobody@unknown.example", adOutlookSchema)} {
		e := adParse(t, adPost(t, h, "", "/autodiscover/autodiscover.xml", b)).Response.Error
		if e == nil || !regexp.MustCompile(`^\d{2}:\d{2}:\d{2}\.\d{7}$`).MatchString(e.Time) || !regexp.MustCompile(`^\d+$`).MatchString(e.ID) {
			t.Fatalf("error attributes %+v", e)
		}
		ids = append(ids, e.ID)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Errorf("Id varies with the request: %v", ids)
	}
}

func TestAutodiscoverV2(t *testing.T) {
	h, _ := adHandler(t, AutodiscoverOptions{})
	for _, tc := range []struct {
		name, target string
		status       int
		want         string
	}{
		{"autodiscoverv1", "/autodiscover/autodiscover.json?Email=bob@example.com&Protocol=AutodiscoverV1&RedirectCount=1", 200, `"Url":"https://autodiscover.example.com/autodiscover/autodiscover.xml"`},
		{"own_pox_url", "/autodiscover/autodiscover.json?Email=x@plain.example&Protocol=AutodiscoverV1", 200, `"Url":"https://config.plain.example/Autodiscover/Autodiscover.xml"`},
		{"activesync_alice", "/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=ActiveSync", 200, `{"Protocol":"ActiveSync","Url":"https://mail.example.com/Microsoft-Server-ActiveSync"}`},
		{"activesync_alias", "/autodiscover/autodiscover.json/v1.0/a.example@example.com?Protocol=ActiveSync", 200, `"Url":"https://mail.example.com/Microsoft-Server-ActiveSync"`},
		{"activesync_bob_not_entitled", "/autodiscover/autodiscover.json?Email=bob@example.com&Protocol=ActiveSync", 400, `Supported values are 'AutodiscoverV1'`},
		{"activesync_plain_domain_has_none", "/autodiscover/autodiscover.json?Email=x@plain.example&Protocol=ActiveSync", 400, `"ErrorCode":"InvalidProtocol"`},
		{"ews_configured", "/autodiscover/autodiscover.json?Email=alice@ews.example&Protocol=EWS", 200, `{"Protocol":"Ews","Url":"https://mail.ews.example/EWS/Exchange.asmx"}`},
		{"ews_not_configured", "/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=Ews", 400, `Supported values are 'ActiveSync,AutodiscoverV1'`},
		{"ews_listed_when_configured", "/autodiscover/autodiscover.json?Email=alice@ews.example&Protocol=Rest", 400, `'ActiveSync,AutodiscoverV1,Ews'`},
		{"nonsense", "/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=Nonsense", 400, `"ErrorMessage":"The given protocol value 'Nonsense' is invalid.`},
		{"missing_protocol", "/autodiscover/autodiscover.json?Email=alice@example.com", 400, `"ErrorCode":"InvalidProtocol"`},
		{"missing_email", "/autodiscover/autodiscover.json?Protocol=AutodiscoverV1", 400, `"ErrorCode":"InvalidUser"`},
		{"invalid_email", "/autodiscover/autodiscover.json/v1.0/not-an-address?Protocol=AutodiscoverV1", 400, `"ErrorCode":"InvalidUser"`},
		{"unknown_domain", "/autodiscover/autodiscover.json?Email=a@unknown.example&Protocol=AutodiscoverV1", 404, `"ErrorCode":"InvalidUser"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, h, http.MethodGet, "", tc.target)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("%d %s\nwant %d containing %s", rec.Code, rec.Body, tc.status, tc.want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if !json.Valid(rec.Body.Bytes()) {
				t.Errorf("not JSON: %s", rec.Body)
			}
		})
	}
	if rec := get(t, h, http.MethodPost, "", "/autodiscover/autodiscover.json?Email=alice@example.com&Protocol=AutodiscoverV1"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
	if rec := get(t, h, http.MethodGet, "", "/autodiscover/autodiscover.json/v1.0/a/b?Protocol=AutodiscoverV1"); rec.Code != http.StatusNotFound {
		t.Errorf("extra path segment: %d", rec.Code)
	}
}

func TestAutodiscoverV2RejectMode(t *testing.T) {
	res, _ := adResolver(t)
	res.reject = true
	h := NewHandler(res, Options{})
	rec := get(t, h, http.MethodGet, "", "/autodiscover/autodiscover.json?Email=nobody@example.com&Protocol=ActiveSync")
	if rec.Code != http.StatusNotFound {
		t.Errorf("v2 unknown in reject mode: %d %s", rec.Code, rec.Body)
	}
	d := adParse(t, adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("carol@example.com", adOutlookSchema)))
	if d.errorCode() != 500 {
		t.Errorf("POX disabled in reject mode: ErrorCode %d, want 500", d.errorCode())
	}
	d = adParse(t, adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("carol@example.com", adMobilesyncSchema)))
	if d.Response.Action.Error == nil || d.Response.User.EMailAddress != "" {
		t.Errorf("mobilesync disabled in reject mode: %+v", d.Response)
	}
}

// ---------------------------------------------------------------------
// The redirect probe

// The probe answers 302 only when the request is known to have come over
// plain HTTP: on the plain-HTTP listener of a TLS-serving server, or said
// so by a trusted proxy. Anything else is answered (finding 8: a demo
// behind a TLS-terminating proxy redirected every HTTPS POST to itself).
func TestAutodiscoverRedirectProbe(t *testing.T) {
	h, _ := adHandler(t, AutodiscoverOptions{})
	trusting, _ := adHandler(t, AutodiscoverOptions{TrustForwardedProto: true})
	res, _ := adResolver(t)
	behindLB := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{TrustedProxies: []string{"10.0.0.0/8"}})})
	const target = "https://autodiscover.example.com/autodiscover/autodiscover.xml"
	for _, tc := range []struct {
		name     string
		h        http.Handler
		host     string
		plain    bool // arrived on server.http_listen of a TLS-serving server
		tls      bool
		peer     string
		xfp, fwd string
		redirect bool
	}{
		{"plain_listener_autodiscover_host", h, "autodiscover.example.com", true, false, "", "", "", true},
		{"plain_listener_bare_domain", h, "example.com", true, false, "", "", "", true},
		{"plain_listener_by_ip", h, "127.0.0.1:8080", true, false, "", "", "", false},
		{"plain_listener_other_host", h, "mail.example.com", true, false, "", "", "", false},
		{"plain_listener_unconfigured_domain", h, "autodiscover.unknown.example", true, false, "", "", "", false},
		{"https_direct", h, "autodiscover.example.com", false, true, "", "", "", false},
		{"no_word_on_the_protocol", h, "autodiscover.example.com", false, false, "", "", "", false},
		{"loopback_proxy_says_https", h, "autodiscover.example.com", false, false, "127.0.0.1:4711", "https", "", false},
		{"loopback_proxy_says_http", h, "autodiscover.example.com", false, false, "127.0.0.1:4711", "http", "", true},
		{"loopback6_proxy_says_http", h, "autodiscover.example.com", false, false, "[::1]:4711", "http", "", true},
		{"loopback_proxy_forwarded_http", h, "autodiscover.example.com", false, false, "127.0.0.1:4711", "", "for=192.0.2.7;proto=http", true},
		{"loopback_proxy_appended_list", h, "autodiscover.example.com", false, false, "127.0.0.1:4711", "http, https", "", false},
		{"client_says_http_untrusted", h, "autodiscover.example.com", false, false, "192.0.2.9:4711", "http", "", false},
		{"client_says_http_trust_all", trusting, "autodiscover.example.com", false, false, "192.0.2.9:4711", "http", "", true},
		{"trusted_proxy_says_http", behindLB, "autodiscover.example.com", false, false, "10.1.2.3:4711", "http", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/Autodiscover/Autodiscover.xml", nil)
			req.Host = tc.host
			if tc.plain {
				req = req.WithContext(OverPlainHTTP(req.Context()))
			}
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			}
			if tc.peer != "" {
				req.RemoteAddr = tc.peer
			}
			if tc.xfp != "" {
				req.Header.Set("X-Forwarded-Proto", tc.xfp)
			}
			if tc.fwd != "" {
				req.Header.Set("Forwarded", tc.fwd)
			}
			rec := httptest.NewRecorder()
			tc.h.ServeHTTP(rec, req)
			if tc.redirect {
				if rec.Code != http.StatusFound || rec.Header().Get("Location") != target {
					t.Errorf("want 302 to %s, got %d %q", target, rec.Code, rec.Header().Get("Location"))
				}
				return
			}
			if rec.Code != http.StatusOK || adParse(t, rec).errorCode() != 600 {
				t.Errorf("want a direct answer (600 for a GET), got %d %s", rec.Code, rec.Body)
			}
		})
	}
	// Behind a TLS-terminating proxy on the same host, a POST gets its
	// settings: no key changed.
	req := httptest.NewRequest(http.MethodPost, "/Autodiscover/Autodiscover.xml", strings.NewReader(adRequest("alice@example.com", adOutlookSchema)))
	req.Host, req.RemoteAddr = "autodiscover.example.com", "127.0.0.1:4711"
	req.Header.Set("X-Forwarded-Proto", "https")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if d := adParse(t, rec); rec.Code != http.StatusOK || d.errorCode() != 0 {
		t.Errorf("POST behind a TLS proxy: %d %s", rec.Code, rec.Body)
	}
	// Credentials are never asked for on the plain-HTTP hop.
	authH, _ := adHandler(t, AutodiscoverOptions{RequireAuth: true})
	req = httptest.NewRequest(http.MethodPost, "/autodiscover/autodiscover.xml", strings.NewReader(adRequest("alice@example.com", adOutlookSchema)))
	req.Host = "autodiscover.example.com"
	rec = httptest.NewRecorder()
	authH.ServeHTTP(rec, req.WithContext(OverPlainHTTP(req.Context())))
	if rec.Code != http.StatusFound {
		t.Errorf("require_auth over http: %d, want the 302 first", rec.Code)
	}
}

// ---------------------------------------------------------------------
// Authenticated discovery

func TestAutodiscoverAuth(t *testing.T) {
	opts := AutodiscoverOptions{RequireAuth: true, Realm: "Example Mail"}
	if err := opts.Prepare(); err != nil {
		t.Fatal(err)
	}
	res, dir := adResolver(t)
	h := NewHandler(res, Options{Autodiscover: opts, Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 100})})
	// failures are the tokens taken from the client's unknown-address
	// budget: a failed login counts like a lookup of an unknown address.
	failures := func() float64 { return 100 - unknownTokens(h, "192.0.2.1") }
	post := func(addr, user, pass string) *httptest.ResponseRecorder {
		var hdr []string
		if user != "" || pass != "" {
			hdr = []string{"Authorization", adBasicAuth(user, pass)}
		}
		return adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest(addr, adOutlookSchema), hdr...)
	}
	for _, tc := range []struct {
		name, addr, user, pass string
		ok                     bool
		failure                bool // counts toward per-client limits
	}{
		{"no_credentials", "alice@example.com", "", "", false, false},
		{"right_password", "alice@example.com", "alice@example.com", adDemoPassword, true, false},
		{"right_password_alias", "a.example@example.com", "alice", adDemoPassword, true, false},
		{"login_name_as_user", "bob@example.com", "bob.login", adDemoPassword, true, false},
		{"wrong_password", "alice@example.com", "alice@example.com", "wrong", false, true},
		{"empty_password", "alice@example.com", "alice@example.com", "", false, false},
		{"other_users_password_user", "bob@example.com", "alice@example.com", "wrong", false, true},
		{"disabled_account", "carol@example.com", "carol@example.com", adDemoPassword, false, true},
		{"unknown_address", "nobody@example.com", "nobody@example.com", adDemoPassword, false, true},
		{"unknown_domain", "alice@unknown.example", "alice", adDemoPassword, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := failures()
			rec := post(tc.addr, tc.user, tc.pass)
			if tc.ok {
				if d := adParse(t, rec); d.errorCode() != 0 || len(d.protocols(t)) == 0 {
					t.Errorf("want settings: %s", rec.Body)
				}
			} else {
				if rec.Code != http.StatusUnauthorized {
					t.Fatalf("status %d, want 401: %s", rec.Code, rec.Body)
				}
				if got := rec.Header().Get("WWW-Authenticate"); got != `Basic realm="Example Mail", charset="UTF-8"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
				if strings.Contains(rec.Body.String(), "example.com") || strings.Contains(rec.Body.String(), "Protocol") {
					t.Errorf("401 body carries data: %s", rec.Body)
				}
			}
			if counted := failures() - before; math.Round(counted) != map[bool]float64{true: 1}[tc.failure] {
				t.Errorf("%v failures counted", counted)
			}
		})
	}
	t.Run("mobilesync_after_auth", func(t *testing.T) {
		rec := adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", adMobilesyncSchema), "Authorization", adBasicAuth("alice", adDemoPassword))
		if d := adParse(t, rec); d.Response.Action.Settings == nil {
			t.Errorf("no ActiveSync settings: %s", rec.Body)
		}
	})
	t.Run("malformed_body_with_credentials", func(t *testing.T) {
		rec := adPost(t, h, "", "/autodiscover/autodiscover.xml", "<nope", "Authorization", adBasicAuth("alice", adDemoPassword))
		if adParse(t, rec).errorCode() != 600 {
			t.Errorf("want 600: %s", rec.Body)
		}
	})
	t.Run("directory_down", func(t *testing.T) {
		hd, dird := adHandler(t, AutodiscoverOptions{RequireAuth: true})
		dird.down.Store(true)
		rec := adPost(t, hd, "", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", adOutlookSchema), "Authorization", adBasicAuth("alice", adDemoPassword))
		if rec.Code != http.StatusOK || adParse(t, rec).errorCode() != 603 {
			t.Errorf("bind failure: want 603 in 200, got %d %s", rec.Code, rec.Body)
		}
		// Lookups failing too: the password cannot be checked, which is not a wrong password.
		dird.fail.Store(true)
		rec = adPost(t, hd, "", "/autodiscover/autodiscover.xml", adRequest("bob@example.com", adMobilesyncSchema), "Authorization", adBasicAuth("bob", adDemoPassword))
		if d := adParse(t, rec); d.Response.Action.Error == nil || d.Response.Action.Error.Message != msgMobilesyncDirectory {
			t.Errorf("lookup failure: %s", rec.Body)
		}
	})
	t.Run("v2_domain_level_when_auth_required", func(t *testing.T) {
		// Bob is not entitled to ActiveSync, but v2 is unauthenticated and
		// must not tell: it answers with the domain's offer.
		before := dir.searches.Load()
		rec := get(t, h, http.MethodGet, "", "/autodiscover/autodiscover.json?Email=bob@example.com&Protocol=ActiveSync")
		if rec.Code != 200 || dir.searches.Load() != before {
			t.Errorf("%d %s, searches +%d", rec.Code, rec.Body, dir.searches.Load()-before)
		}
	})
}

// A resolver that cannot check passwords fails closed.
func TestAutodiscoverAuthWithoutAuthenticator(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(struct{ Resolver }{res}, Options{Autodiscover: AutodiscoverOptions{RequireAuth: true}})
	rec := adPost(t, h, "", "/autodiscover/autodiscover.xml", adRequest("alice@example.com", adOutlookSchema), "Authorization", adBasicAuth("alice", adDemoPassword))
	if rec.Code == http.StatusOK && adParse(t, rec).errorCode() == 0 {
		t.Errorf("settings without a password check: %s", rec.Body)
	}
}

func TestAutodiscoverOptionsPrepare(t *testing.T) {
	neg, long, ok := -time.Second, 2*time.Hour, 30*time.Second
	for _, tc := range []struct {
		name string
		opts AutodiscoverOptions
		err  string
	}{
		{"defaults", AutodiscoverOptions{}, ""},
		{"ttl_ok", AutodiscoverOptions{AuthCacheTTL: &ok}, ""},
		{"ttl_negative", AutodiscoverOptions{AuthCacheTTL: &neg}, "autodiscover.auth_cache_ttl:"},
		{"ttl_too_long", AutodiscoverOptions{AuthCacheTTL: &long}, "autodiscover.auth_cache_ttl:"},
		{"realm_quote", AutodiscoverOptions{Realm: `a"b`}, "autodiscover.realm:"},
		{"realm_newline", AutodiscoverOptions{Realm: "a\nb"}, "autodiscover.realm:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Prepare()
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.opts.Realm != defaultRealm {
					t.Errorf("realm %q, want the default", tc.opts.Realm)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("error %v, want one starting %q", err, tc.err)
			}
		})
	}
}

// ---------------------------------------------------------------------
// The request parser

func TestParsePOXRequest(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       poxRequest
		schema     poxSchema
	}{
		{"outlook", adRequest("a@b.example", adOutlookSchema),
			poxRequest{nsOutlookRequest, "a@b.example", "", adOutlookSchema}, schemaOutlook},
		{"mobilesync", adRequest("a@b.example", adMobilesyncSchema),
			poxRequest{nsMobilesyncRequest, "a@b.example", "", adMobilesyncSchema}, schemaMobilesync},
		{"mobilesync_by_namespace", `<Autodiscover xmlns="` + nsMobilesyncRequest + `"><Request><EMailAddress>a@b.example</EMailAddress></Request></Autodiscover>`,
			poxRequest{nsMobilesyncRequest, "a@b.example", "", ""}, schemaMobilesync},
		{"legacydn", `<Autodiscover><Request><LegacyDN> /o=x/cn=y </LegacyDN><EMailAddress>a@b.example</EMailAddress></Request></Autodiscover>`,
			poxRequest{"", "a@b.example", "/o=x/cn=y", ""}, schemaOutlook},
		{"comments_and_cdata", `<!-- hi --><Autodiscover><Request><EMailAddress><![CDATA[a@b.example]]></EMailAddress><!-- x --></Request></Autodiscover>`,
			poxRequest{"", "a@b.example", "", ""}, schemaOutlook},
		{"unknown_children_ignored", `<Autodiscover><Request><Foo>bar</Foo><EMailAddress>a@b.example</EMailAddress></Request><Extra/></Autodiscover>`,
			poxRequest{"", "a@b.example", "", ""}, schemaOutlook},
		{"latin1", "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><Autodiscover><Request><EMailAddress>j\xf6rg@b.example</EMailAddress></Request></Autodiscover>",
			poxRequest{"", "jörg@b.example", "", ""}, schemaOutlook},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePOXRequest([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || got.responseSchema() != tc.schema {
				t.Errorf("got %+v (schema %d), want %+v (schema %d)", got, got.responseSchema(), tc.want, tc.schema)
			}
		})
	}
}

func FuzzParsePOXRequest(f *testing.F) {
	for _, s := range []string{
		adRequest("alice@example.com", adOutlookSchema),
		adRequest("bob@example.com", adMobilesyncSchema),
		"\xEF\xBB\xBF" + adRequest("a@b.c", adOutlookSchema),
		`<?xml version="1.0" encoding="latin1"?><Autodiscover><Request><EMailAddress>x</EMailAddress></Request></Autodiscover>`,
		`<!DOCTYPE a [<!ENTITY x "y">]><Autodiscover/>`,
		`<Autodiscover><Request><EMailAddress><![CDATA[a]]></EMailAddress></Request></Autodiscover>`,
		"", "<", "<Autodiscover>", "<a:Autodiscover xmlns:a='x'/>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parsePOXRequest(body)
		if err != nil {
			return
		}
		for _, v := range []string{req.EMailAddress, req.LegacyDN, req.AcceptableResponseSchema} {
			if v != strings.TrimSpace(v) {
				t.Errorf("untrimmed value %q", v)
			}
		}
		again, err := parsePOXRequest(body)
		if err != nil || again != req {
			t.Errorf("not deterministic: %+v / %+v, %v", req, again, err)
		}
		_ = req.responseSchema()
		// Whatever parsed must survive the address check without a panic.
		_, _ = policy.ParseAddress(req.EMailAddress)
	})
}
