package ldapsource

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

var (
	// ErrInvalidCredentials: the directory refused the user's bind (wrong
	// password, locked or vanished entry, empty password).
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrAccountRestricted accompanies ErrInvalidCredentials when the
	// directory says why in a way that does not blame the password: the
	// account is locked, disabled, expired, outside its logon hours or
	// must change its password (AD sub-codes 530-533, 701, 773, 775;
	// OpenLDAP's "unwilling to perform"). The password may be right.
	ErrAccountRestricted = errors.New("the account may not log on now")
	// ErrInsecureBind: a user's password would cross the network
	// unencrypted; Authenticate refuses to send it.
	ErrInsecureBind = errors.New("refusing to send a user's password over an unencrypted LDAP connection")
)

// Authenticate checks password by binding as dn on a fresh connection of
// its own, never on a pooled service-account connection (whose identity
// would change), and closes it. It returns nil on success,
// ErrInvalidCredentials when the directory refuses the bind, and other
// errors when the directory cannot be asked. URLs are tried in failover
// order as for lookups; a refusal is an answer and stops there.
//
// An empty password always fails: a simple bind with a DN and no password
// is an "unauthenticated bind" that many servers answer with success
// (RFC 4513 §5.1.2). Passwords are only sent over ldaps:// or StartTLS,
// or to a loopback address.
func (s *Source) Authenticate(ctx context.Context, dn, password string) error {
	if dn == "" || password == "" {
		return ErrInvalidCredentials
	}
	select {
	case <-s.closed:
		return ErrClosed
	default:
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	// Bind connections are not pooled, but their number is capped like
	// the pool's so that a burst of logins cannot open unbounded sockets.
	select {
	case s.binds <- struct{}{}:
		defer func() { <-s.binds }()
	case <-ctx.Done():
		return fmt.Errorf("waiting to check a password: %w", ctx.Err())
	case <-s.closed:
		return ErrClosed
	}
	order, err := s.dialOrder(ctx)
	if err != nil {
		return fmt.Errorf("checking a password: %w", err)
	}
	var errs []error
	for _, idx := range order {
		t := s.targets[idx]
		if !s.cfg.usesTLS(t) && !isLoopback(t.host) {
			errs = append(errs, fmt.Errorf("%s: %w: use ldaps:// or ldap.start_tls", t.url, ErrInsecureBind))
			continue
		}
		// A server whose breaker is open is not asked; one that does
		// not answer now opens its breaker (breaker.go).
		if err := s.skip(idx); err != nil {
			errs = append(errs, err)
			continue
		}
		err := s.bindOnce(ctx, idx, dn, password)
		if err == nil || errors.Is(err, ErrInvalidCredentials) {
			return err
		}
		errs = append(errs, err)
		s.failed(caller, idx, err)
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("checking a password: %w", errors.Join(errs...))
}

// bindOnce dials target idx and binds as dn. LDAP result codes that mean
// "these credentials do not open this entry" become ErrInvalidCredentials.
func (s *Source) bindOnce(ctx context.Context, idx int, dn, password string) error {
	t := s.targets[idx]
	ctx, untrack := s.breakers[idx].track(ctx)
	defer untrack()
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	lc, nc, err := s.connect(dctx, idx)
	cancel()
	if err != nil {
		return err
	}
	defer lc.Close()
	// The dial deadline is spent; the bind gets what is left of the request.
	deadline, _ := ctx.Deadline()
	if err := nc.SetDeadline(deadline); err != nil {
		return fmt.Errorf("%s: %w", t.url, err)
	}
	lc.SetTimeout(time.Until(deadline))
	stop := interruptOn(ctx, nc)
	err = lc.Bind(dn, password)
	stop()
	switch {
	case err == nil:
		return nil
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials),
		ldap.IsErrorWithCode(err, ldap.LDAPResultInappropriateAuthentication),
		ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights),
		// OpenLDAP: unauthenticated bind refused, or ppolicy lockout.
		ldap.IsErrorWithCode(err, ldap.LDAPResultUnwillingToPerform),
		ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject),
		ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidDNSyntax),
		ldap.IsErrorWithCode(err, ldap.LDAPResultConstraintViolation),
		ldap.IsErrorWithCode(err, ldap.ErrorEmptyPassword):
		if accountRestricted(err) {
			return fmt.Errorf("%w: %w", ErrInvalidCredentials, ErrAccountRestricted)
		}
		return ErrInvalidCredentials
	case ldap.IsErrorWithCode(err, ldap.LDAPResultStrongAuthRequired), ldap.IsErrorWithCode(err, ldap.LDAPResultConfidentialityRequired):
		return fmt.Errorf("%s: user bind: %w (the directory refuses simple binds without TLS: use ldaps:// or ldap.start_tls: true)", t.url, err)
	}
	return fmt.Errorf("%s: user bind: %w", t.url, err)
}

// accountRestricted reports whether a refused bind blames the account's
// state rather than the password.
func accountRestricted(err error) bool {
	if ldap.IsErrorWithCode(err, ldap.LDAPResultUnwillingToPerform) {
		return true
	}
	if m := adSubCode.FindStringSubmatch(err.Error()); m != nil {
		switch strings.ToLower(m[1]) {
		case "530", "531", "532", "533", "701", "773", "775":
			return true
		}
	}
	return false
}
