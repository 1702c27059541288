package ldapsource

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

func adError(sub string) error {
	return ldap.NewError(ldap.LDAPResultInvalidCredentials,
		fmt.Errorf("80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data %s, v4563", sub))
}

func TestClassify(t *testing.T) {
	const pwKey = "ldap.bind_password_file"
	tests := []struct {
		name   string
		err    error
		kind   Kind
		key    string
		reason string // substring of the reason
	}{
		{"AD wrong name or password", adError("52e"), Configuration, pwKey, "ldap.bind_dn with its password (AD 52e"},
		{"AD locked out", adError("775"), Configuration, "ldap.bind_dn", "locked out"},
		{"AD disabled", adError("533"), Configuration, "ldap.bind_dn", "disabled"},
		{"AD password expired", adError("532"), Configuration, "ldap.bind_dn", "password has expired"},
		{"AD must change password", adError("773"), Configuration, "ldap.bind_dn", "must change its password"},
		{"AD account expired", adError("701"), Configuration, "ldap.bind_dn", "account has expired"},
		{"AD no such user", adError("525"), Configuration, "ldap.bind_dn", "does not exist"},
		{"OpenLDAP invalid DN syntax", ldap.NewError(ldap.LDAPResultInvalidDNSyntax, errors.New("invalid DN")), Configuration, "ldap.bind_dn", "LDAP 34"},
		{"OpenLDAP invalid credentials", ldap.NewError(ldap.LDAPResultInvalidCredentials, errors.New("")), Configuration, pwKey, "refused the service account's credentials"},
		{"strong auth required", ldap.NewError(ldap.LDAPResultStrongAuthRequired, errors.New("00002028: LdapErr: DSID-0C090259, comment: The server requires binds to turn on integrity checking")), Configuration, "ldap.urls", "without TLS"},
		{"unknown CA", fmt.Errorf("TLS: %w", x509.UnknownAuthorityError{}), Configuration, "ldap.ca_file", "trusted CA"},
		{"StartTLS wrong name", fmt.Errorf("StartTLS: %w: %w", errCertificate, errors.New("x509: certificate is valid for ldap.example.com, not ldap.example.net")), Configuration, "ldap.tls_server_name", "not valid for the name"},
		{"StartTLS unknown CA", fmt.Errorf("StartTLS: %w: %w", errCertificate, errors.New("x509: certificate signed by unknown authority")), Configuration, "ldap.ca_file", "trusted CA"},
		{"refused", fmt.Errorf("dial: %w", errors.New("connect: connection refused")), Transient, "", ""},
		{"busy", ldap.NewError(ldap.LDAPResultBusy, errors.New("busy")), Transient, "", ""},
		{"network", ldap.NewError(ldap.ErrorNetwork, errors.New("reset")), Transient, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := classify(fmt.Errorf("ldap://dc: bind: %w", tt.err), pwKey, "CN=svc,DC=example,DC=com")
			if KindOf(err) != tt.kind {
				t.Fatalf("kind %v, want %v (%v)", KindOf(err), tt.kind, err)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("%v does not wrap the original error", err)
			}
			if tt.kind == Transient {
				return
			}
			ce := ConfigurationError(err)
			if ce.Key != tt.key || !strings.Contains(ce.Reason, tt.reason) || ce.Fix == "" || !strings.HasPrefix(err.Error(), tt.key+": ") {
				t.Errorf("got key %q reason %q fix %q (%v); want key %q, reason with %q", ce.Key, ce.Reason, ce.Fix, err, tt.key, tt.reason)
			}
			if tt.key == pwKey && (!strings.Contains(ce.Reason+ce.Fix, "ldap.bind_dn") || !strings.Contains(ce.Fix, pwKey)) {
				t.Errorf("a refused name or password names ldap.bind_dn and %s: %v", pwKey, err)
			}
			// Classifying again (a wrapped error) keeps the first verdict.
			if again := classify(fmt.Errorf("again: %w", err), "other", ""); ConfigurationError(again) != ce {
				t.Errorf("classified twice: %v", again)
			}
		})
	}
}

// 52e names both keys, the forms AD takes and how to quote DOMAIN\user,
// and says when the bind name is a bare account name.
func TestLockoutSafeClassify52eNamesBindDN(t *testing.T) {
	const pwKey = "ldap.bind_password_file"
	for _, bindDN := range []string{"svc-mailbeacon", "CN=svc,CN=Users,DC=example,DC=com", `EXAMPLE\svc`, "svc@example.com"} {
		ce := ConfigurationError(classify(adError("52e"), pwKey, bindDN))
		if ce == nil || ce.Key != pwKey {
			t.Fatalf("%s: %v", bindDN, ce)
		}
		for _, w := range []string{"ldap.bind_dn", pwKey, "a full DN", "a UPN", `DOMAIN\user`, "single quotes"} {
			if !strings.Contains(ce.Reason+" "+ce.Fix, w) {
				t.Errorf("%s: %q does not say %q", bindDN, ce.Reason+" "+ce.Fix, w)
			}
		}
		if bare := strings.Contains(ce.Fix, "bare account name"); bare != (bindDN == "svc-mailbeacon") {
			t.Errorf("%s: bare-name hint %t: %s", bindDN, bare, ce.Fix)
		}
	}
}
