package policy

import (
	"fmt"
	"net/url"
	"strings"
)

// OAuthConfig is a domain's oauth block: the authorization server that
// issues tokens for its services to public clients
// (draft-ietf-mailmaint-oauth-public).
type OAuthConfig struct {
	// Issuer is the authorization server's issuer identifier (RFC 8414):
	// an https URL without query or fragment, from which clients find the
	// server's metadata.
	Issuer string `mapstructure:"issuer"`
	// ClientID is the public client ID that mail clients use with it.
	ClientID string `mapstructure:"client_id"`
	// Scopes the clients ask for, e.g. IMAP, SMTP, offline_access.
	Scopes []string `mapstructure:"scopes"`
	// AuthURL and TokenURL are the authorization and token endpoints, for
	// clients that do not read the issuer's metadata; optional.
	AuthURL  string `mapstructure:"auth_url"`
	TokenURL string `mapstructure:"token_url"`
}

// OAuth is a validated OAuthConfig.
type OAuth struct {
	Issuer   string // https URL, RFC 8414
	ClientID string
	Scopes   []string
	AuthURL  string
	TokenURL string
}

// IssuerHost is the issuer's host name, the form config-v1.1.xml's
// <oAuth2><issuer> takes.
func (o *OAuth) IssuerHost() string {
	u, err := url.Parse(o.Issuer)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// newOAuth validates c. Errors start with the key (issuer, ...) for the
// caller to prefix.
func newOAuth(c OAuthConfig) (*OAuth, error) {
	u, err := url.Parse(c.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("issuer: %q is not an issuer identifier: give the https:// URL without query or fragment that the authorization server's metadata names (RFC 8414)", c.Issuer)
	}
	o := &OAuth{Issuer: c.Issuer, ClientID: strings.TrimSpace(c.ClientID), AuthURL: c.AuthURL, TokenURL: c.TokenURL}
	for i, s := range c.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			return nil, fmt.Errorf("scopes[%d]: %q is not an OAuth scope (no spaces or quotes)", i, s)
		}
		o.Scopes = append(o.Scopes, s)
	}
	for _, e := range []struct{ key, v string }{{"auth_url", c.AuthURL}, {"token_url", c.TokenURL}} {
		if e.v == "" {
			continue
		}
		if u, err := url.Parse(e.v); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("%s: %q is not an https:// URL", e.key, e.v)
		}
	}
	return o, nil
}
