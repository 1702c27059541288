package ldapsource

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strings"

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
// Samba) answers.
var adReasons = map[string]struct{ reason, fix string }{
	"525": {"the service account does not exist (AD 525)", "check ldap.bind_dn"},
	"52e": {"wrong password for the service account (AD 52e)", "put the account's current password in ldap.bind_password_file (or MAILBEACON_LDAP_BIND_PASSWORD)"},
	"530": {"the service account may not log on at this time (AD 530)", "lift the account's logon hours"},
	"531": {"the service account may not log on from this computer (AD 531)", "lift the account's workstation restriction"},
	"532": {"the service account's password has expired (AD 532)", "set a new password on the account (and in ldap.bind_password_file); consider a password that does not expire for it"},
	"533": {"the service account is disabled (AD 533)", "enable the account in the directory"},
	"701": {"the service account has expired (AD 701)", "extend the account's expiry date in the directory"},
	"773": {"the service account must change its password (AD 773)", "set a new password on the account (and in ldap.bind_password_file), without \"must change at next logon\""},
	"775": {"the service account is locked out (AD 775)", "unlock the account in the directory, after fixing the password mailbeacon uses"},
}

// classify turns a failure to connect and bind as the service account into
// an *Error when it is a configuration error, and returns it unchanged
// otherwise. passwordKey names where the password came from.
func classify(err error, passwordKey string) error {
	if err == nil || ConfigurationError(err) != nil {
		return err
	}
	cfg := func(key, reason, fix string) error {
		return &Error{Kind: Configuration, Key: key, Reason: reason, Fix: fix, Err: err}
	}
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials):
		if m := adSubCode.FindStringSubmatch(err.Error()); m != nil {
			if r, ok := adReasons[strings.ToLower(m[1])]; ok {
				key := "ldap.bind_dn"
				if strings.ToLower(m[1]) == "52e" {
					key = passwordKey
				}
				return cfg(key, r.reason, r.fix)
			}
		}
		return cfg(passwordKey, "the directory refused the service account's credentials (LDAP 49, invalid credentials)",
			"check ldap.bind_dn and the password in "+passwordKey)
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
// error when the directory says it does not exist.
func classifyBaseDN(err error) error {
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return &Error{Kind: Configuration, Key: "ldap.base_dn", Reason: "the base DN does not exist (or the service account cannot see it)",
			Fix: "set ldap.base_dn to the subtree that holds the mailboxes, e.g. ou=people,dc=example,dc=com", Err: err}
	}
	return err
}
