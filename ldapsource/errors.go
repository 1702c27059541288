package ldapsource

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// Kind says what a directory failure calls for.
type Kind int

const (
	// Transient failures (connection refused, timeout, reset, server
	// busy) pass: serve stale answers, fail over, try again.
	Transient Kind = iota
	// Configuration failures (the service account's credentials refused,
	// the certificate not verified, strong authentication required) do
	// not pass by themselves: refuse to start, and at run time bind again
	// only after a backoff, so that a directory's lockout policy does not
	// lock the service account out.
	Configuration
)

func (k Kind) String() string {
	if k == Configuration {
		return "configuration"
	}
	return "transient"
}

// Error is a directory failure with its kind. A configuration error names
// the key at fault and the fix.
type Error struct {
	Kind   Kind
	Key    string // configuration key at fault, e.g. ldap.ca_file; empty for transient errors
	Reason string // what went wrong, in words
	Fix    string // what to do about it
	Err    error
}

func (e *Error) Error() string {
	if e.Kind != Configuration {
		return e.Err.Error()
	}
	return fmt.Sprintf("%s: %s (%v): %s", e.Key, e.Reason, e.Err, e.Fix)
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns Configuration when err is or wraps a configuration error,
// and Transient for every other failure.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Transient
}

// ConfigurationError returns the configuration error err is or wraps, or nil.
func ConfigurationError(err error) *Error {
	var e *Error
	if errors.As(err, &e) && e.Kind == Configuration {
		return e
	}
	return nil
}

// errCertificate marks a StartTLS handshake that failed on the server's
// certificate: go-ldap reports it as text only.
var errCertificate = errors.New("certificate not verified")

// adSubCode finds Active Directory's reason for an invalid-credentials
// answer, e.g. "AcceptSecurityContext error, data 52e, v4563".
var adSubCode = regexp.MustCompile(`\bdata ([0-9a-fA-F]{3,8})\b`)

// adReasons are the sub-codes of LDAP result 49 in Active Directory (and
// Samba) answers. 52e is not here: see classify.
var adReasons = map[string]struct{ reason, fix string }{
	"525": {"the service account does not exist (AD 525)", "check ldap.bind_dn"},
	"530": {"the service account may not log on at this time (AD 530)", "lift the account's logon hours"},
	"531": {"the service account may not log on from this computer (AD 531)", "lift the account's workstation restriction"},
	"532": {"the service account's password has expired (AD 532)", "set a new password on the account (and in ldap.bind_password_file); consider a password that does not expire for it"},
	"533": {"the service account is disabled (AD 533)", "enable the account in the directory"},
	"701": {"the service account has expired (AD 701)", "extend the account's expiry date in the directory"},
	"773": {"the service account must change its password (AD 773)", "set a new password on the account (and in ldap.bind_password_file), without \"must change at next logon\""},
	"775": {"the service account is locked out (AD 775)", "unlock the account in the directory, after fixing the password mailbeacon uses"},
}

// bindNameForms is how Active Directory takes a bind name, and how to
// write the one with a backslash in YAML.
const bindNameForms = "a full DN (CN=svc-mailbeacon,CN=Users,DC=example,DC=com), a UPN (svc-mailbeacon@example.com) " +
	"or DOMAIN\\user, in YAML in single quotes ('EXAMPLE\\svc-mailbeacon': in double quotes a backslash starts an escape)"

// bareName reports whether bindDN is none of the forms of bindNameForms:
// no attribute=value, no @, no backslash.
func bareName(bindDN string) bool {
	return bindDN != "" && !strings.ContainsAny(bindDN, "=@\\")
}

// classify turns a failure to connect and bind as the service account into
// an *Error when it is a configuration error, and returns it unchanged
// otherwise. passwordKey names where the password came from; bindDN is
// ldap.bind_dn, for hints about its form.
//
// A refused name or password keeps Key = passwordKey, whichever of the
// two is wrong (the directory does not say): the bind gate (backoff.go)
// and failover key on it. Reason and Fix name ldap.bind_dn beside it.
func classify(err error, passwordKey, bindDN string) error {
	if err == nil || ConfigurationError(err) != nil {
		return err
	}
	cfg := func(key, reason, fix string) error {
		return &Error{Kind: Configuration, Key: key, Reason: reason, Fix: fix, Err: err}
	}
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials):
		sub := ""
		if m := adSubCode.FindStringSubmatch(err.Error()); m != nil {
			sub = strings.ToLower(m[1])
		}
		if r, ok := adReasons[sub]; ok {
			return cfg("ldap.bind_dn", r.reason, r.fix)
		}
		fix := "check ldap.bind_dn and " + passwordKey + " together: ldap.bind_dn must be the service account's name as the directory takes it, " +
			"e.g. its full DN (cn=mailbeacon,ou=services,dc=example,dc=com; in Active Directory also user@domain or DOMAIN\\user), and " +
			passwordKey + " must hold that account's current password"
		reason := "the directory refused the service account's credentials (LDAP 49, invalid credentials)"
		if sub == "52e" {
			// AD answers 52e both for a name it does not know and for a
			// wrong password.
			reason = "the directory refused ldap.bind_dn with its password (AD 52e: no such account, or a wrong password; AD does not say which)"
			fix = "check ldap.bind_dn and " + passwordKey + " together: ldap.bind_dn must be " + bindNameForms +
				", and " + passwordKey + " must hold that account's current password"
		}
		if bareName(bindDN) {
			fix = fmt.Sprintf("ldap.bind_dn %q is a bare account name: give it as one of the forms below; ", bindDN) + fix
		}
		return cfg(passwordKey, reason, fix)
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidDNSyntax):
		return cfg("ldap.bind_dn", "the directory does not take ldap.bind_dn as a name to bind with (LDAP 34, invalid DN syntax)",
			"give the service account's full DN, e.g. cn=mailbeacon,ou=services,dc=example,dc=com (Active Directory also takes user@domain, or DOMAIN\\user in single quotes in YAML)")
	case ldap.IsErrorWithCode(err, ldap.LDAPResultStrongAuthRequired), ldap.IsErrorWithCode(err, ldap.LDAPResultConfidentialityRequired):
		return cfg("ldap.urls", "the directory refuses simple binds without TLS (strong authentication required)",
			"use ldaps:// in ldap.urls, or set ldap.start_tls: true")
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInappropriateAuthentication), ldap.IsErrorWithCode(err, ldap.LDAPResultUnwillingToPerform):
		return cfg("ldap.bind_dn", "the directory does not accept a simple bind as this account",
			"check ldap.bind_dn and that the account may bind with a password")
	}
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	text := err.Error()
	switch {
	case errors.As(err, &host), errors.Is(err, errCertificate) && strings.Contains(text, "certificate is valid for"):
		return cfg("ldap.tls_server_name", "the directory's certificate is not valid for the name dialed",
			"use the host name the certificate names in ldap.urls, or set ldap.tls_server_name to it")
	case errors.As(err, &invalid), errors.Is(err, errCertificate) && strings.Contains(text, "certificate has expired"):
		return cfg("ldap.urls", "the directory's certificate is not valid (expired, or not for a server)",
			"renew the directory's certificate, or point ldap.urls at a server whose certificate is valid")
	case errors.As(err, &unknownCA), errors.As(err, &verify), errors.Is(err, errCertificate):
		return cfg("ldap.ca_file", "the directory's certificate is not signed by a trusted CA",
			"set ldap.ca_file to the PEM file of the CA that signed the directory's certificate")
	}
	return err
}

// classifyBaseDN turns a failure to read the base DN into a configuration
// error when the directory says it does not exist, or that another server
// holds it.
func classifyBaseDN(err error) error {
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
		return &Error{Kind: Configuration, Key: "ldap.base_dn", Reason: "the base DN does not exist (or the service account cannot see it)",
			Fix: "set ldap.base_dn to the subtree that holds the mailboxes, e.g. ou=people,dc=example,dc=com", Err: err}
	case ldap.IsErrorWithCode(err, ldap.LDAPResultReferral):
		return referralError("ldap.base_dn", err)
	}
	return err
}

// referralError says that the base DN named by key is not this directory's:
// Active Directory answers a DN outside its naming contexts (another
// domain's, or one with a typo in a DC= part) with a referral. Served as
// an outage, it would answer every address with the domain defaults.
func referralError(key string, err error) *Error {
	to := "another server"
	if urls := referralURLs(err); len(urls) > 0 {
		q := make([]string, len(urls))
		for i, u := range urls {
			q[i] = strconv.Quote(u) // the server's text: no control characters in the log
		}
		to = strings.Join(q, ", ")
	}
	fix := "set " + key + " to a DN this directory holds (its RootDSE's namingContexts list them; check each DC= part), or point ldap.urls at the server the referral names"
	if key == "ldap.base_dn" {
		fix += "; to search a whole Active Directory forest, use a global catalog port (3268, or 3269 with TLS) in ldap.urls and base_dn: \"\""
	}
	return &Error{Kind: Configuration, Key: key,
		Reason: "the directory does not hold the base DN and refers to " + to + " (LDAP 10, referral: a DN of another domain, or a typo)",
		Fix:    fix, Err: err}
}

// referralURLs returns the URLs of a referral answer (LDAP result 10). They
// are in the LDAPResult's referral field ([3], RFC 4511 §4.1.9), which
// go-ldap keeps in the packet but does not decode for searches.
func referralURLs(err error) []string {
	var lerr *ldap.Error
	if !errors.As(err, &lerr) || lerr.ResultCode != ldap.LDAPResultReferral || lerr.Packet == nil || len(lerr.Packet.Children) < 2 {
		return nil
	}
	var urls []string
	for _, c := range lerr.Packet.Children[1].Children {
		if c == nil || c.ClassType != ber.ClassContext || c.Tag != 3 {
			continue
		}
		for _, u := range c.Children {
			if u == nil {
				continue
			}
			if v, ok := u.Value.(string); ok {
				urls = append(urls, v)
			} else if u.Data != nil {
				urls = append(urls, u.Data.String())
			}
		}
	}
	return urls
}
