package main

// Microsoft Autodiscover end to end against a real OpenLDAP slapd: the
// whole stack as `serve` builds it (ldapsource pool, policy, cache,
// handlers), over StartTLS with the directory's CA. Skips without slapd,
// fails under CI=true (ldaptest).

import (
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

const (
	adOutlookSchema    = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
	adMobilesyncSchema = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)

// adAnswer holds what these tests read from any POX answer.
type adAnswer struct {
	Response struct {
		Account []struct {
			Protocol []struct {
				Type, Server, LoginName, SSL, Encryption string
				Port                                     int
			}
		}
		Action struct {
			Settings *struct {
				Server []struct{ Type, Url string }
			}
			Error *struct{ Status int }
		}
		Error *struct{ ErrorCode int }
	}
}

// protocols lists Type:Port/LoginName@Server/SSL/Encryption.
func (a adAnswer) protocols() string {
	var out []string
	for _, acc := range a.Response.Account {
		for _, p := range acc.Protocol {
			out = append(out, p.Type+":"+strconv.Itoa(p.Port)+"/"+p.LoginName+"@"+p.Server+"/"+p.SSL+"/"+p.Encryption)
		}
	}
	return strings.Join(out, " ")
}

func adPOST(t *testing.T, h http.Handler, addr, schema, user, pass string) (*httptest.ResponseRecorder, adAnswer) {
	t.Helper()
	body := `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>` +
		addr + `</EMailAddress><AcceptableResponseSchema>` + schema + `</AcceptableResponseSchema></Request></Autodiscover>`
	req := httptest.NewRequest(http.MethodPost, "/Autodiscover/Autodiscover.xml", strings.NewReader(body))
	req.Host = "127.0.0.1"
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var a adAnswer
	if rec.Code == http.StatusOK {
		if err := xml.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatalf("%v\n%s", err, rec.Body)
		}
	}
	return rec, a
}

func adSlapdHandler(t *testing.T, srv *ldaptest.Server, requireAuth bool) http.Handler {
	t.Helper()
	cfg := slapdConfig(t, srv, false) // StartTLS with the CA file
	cfg.Autodiscover.RequireAuth = requireAuth
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.source.Close)
	return protocols.NewHandler(a.resolver, a.handlerOptions(nil))
}

// Entitlements come from the directory: bob has no POP3 and no ActiveSync.
func TestAutodiscoverEntitlementsSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	h := adSlapdHandler(t, srv, false)
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"bob_no_pop3", "bob@example.com",
			"IMAP:993/bob.login@mail.example.com/on/SSL SMTP:465/bob.login@mail.example.com/on/SSL SMTP:587/bob.login@mail.example.com/on/TLS"},
		{"alice_everything_via_alias", "a.example@example.com",
			"IMAP:993/alice@mail.example.com/on/SSL POP3:995/alice@mail.example.com/on/SSL SMTP:465/alice@mail.example.com/on/SSL SMTP:587/alice@mail.example.com/on/TLS"},
		{"carol_disabled_gets_defaults", "carol@example.com",
			"IMAP:993/carol@example.com@mail.example.com/on/SSL POP3:995/carol@example.com@mail.example.com/on/SSL SMTP:465/carol@example.com@mail.example.com/on/SSL SMTP:587/carol@example.com@mail.example.com/on/TLS"},
		{"dave_mailhost", "dave@example.com",
			"IMAP:993/dave@mail2.example.com/on/SSL SMTP:465/dave@mail2.example.com/on/SSL SMTP:587/dave@mail2.example.com/on/TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, a := adPOST(t, h, tc.addr, adOutlookSchema, "", "")
			if rec.Code != http.StatusOK || a.protocols() != tc.want {
				t.Errorf("%d\n got %s\nwant %s", rec.Code, a.protocols(), tc.want)
			}
		})
	}
	t.Run("mobilesync_alice", func(t *testing.T) {
		_, a := adPOST(t, h, "alice@example.com", adMobilesyncSchema, "", "")
		if s := a.Response.Action.Settings; s == nil || len(s.Server) != 1 || s.Server[0].Url != "https://mail.example.com/Microsoft-Server-ActiveSync" {
			t.Errorf("settings %+v", a.Response.Action.Settings)
		}
	})
	t.Run("mobilesync_bob_not_entitled", func(t *testing.T) {
		_, a := adPOST(t, h, "bob@example.com", adMobilesyncSchema, "", "")
		if a.Response.Action.Settings != nil || a.Response.Action.Error == nil {
			t.Errorf("bob got %+v", a.Response.Action)
		}
	})
	t.Run("v2_activesync", func(t *testing.T) {
		for addr, want := range map[string]int{"alice@example.com": 200, "bob@example.com": 400} {
			req := httptest.NewRequest(http.MethodGet, "/autodiscover/autodiscover.json/v1.0/"+addr+"?Protocol=ActiveSync", nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != want {
				t.Errorf("%s: %d %s, want %d", addr, rec.Code, rec.Body, want)
			}
		}
	})
}

// Authenticated discovery binds as the user on a connection of its own.
func TestAutodiscoverBasicAuthSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	h := adSlapdHandler(t, srv, true)
	for _, tc := range []struct {
		name, addr, user, pass string
		ok                     bool
	}{
		{"no_credentials", "bob@example.com", "", "", false},
		{"right_password", "bob@example.com", "bob@example.com", ldaptest.UserPassword, true},
		{"right_password_local_part_user", "bob@example.com", "bob", ldaptest.UserPassword, true},
		{"right_password_alias", "a.example@example.com", "alice", ldaptest.UserPassword, true},
		{"wrong_password", "bob@example.com", "bob@example.com", "Secret124!", false},
		{"wrong_case_password", "alice@example.com", "alice@example.com", "secret123!", false},
		{"disabled_account", "carol@example.com", "carol@example.com", ldaptest.UserPassword, false},
		{"unknown_address", "nobody@example.com", "nobody@example.com", ldaptest.UserPassword, false},
		{"right_password_again_remembered", "bob@example.com", "bob", ldaptest.UserPassword, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, a := adPOST(t, h, tc.addr, adOutlookSchema, tc.user, tc.pass)
			if !tc.ok {
				if rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), `Basic realm="`) {
					t.Errorf("want 401 with a Basic challenge, got %d %q: %s", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
				}
				return
			}
			if rec.Code != http.StatusOK || a.Response.Error != nil || !strings.Contains(a.protocols(), "IMAP:993/") {
				t.Errorf("want settings, got %d %s", rec.Code, rec.Body)
			}
		})
	}
	t.Run("mobilesync_bob_after_auth", func(t *testing.T) {
		rec, a := adPOST(t, h, "bob@example.com", adMobilesyncSchema, "bob.login", ldaptest.UserPassword)
		if rec.Code != http.StatusOK || a.Response.Action.Settings != nil || a.Response.Action.Error == nil {
			t.Errorf("%d %s", rec.Code, rec.Body)
		}
	})
}
