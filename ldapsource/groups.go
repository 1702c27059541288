package ldapsource

import (
	"context"
	"fmt"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// MatchingRuleInChain is Active Directory's LDAP_MATCHING_RULE_IN_CHAIN:
// the filter (memberOf:1.2.840.113556.1.4.1941:=G) matches an entry that is
// a member of group G directly or through nested groups of any depth.
const MatchingRuleInChain = "1.2.840.113556.1.4.1941"

// MemberOf reports which of groups (DNs) the entry dn belongs to, directly
// or through nested groups. It asks with Active Directory's in-chain
// matching rule, one base-scope search of the entry per group on one pooled
// connection; the groups come back as given. Directories without the rule
// (OpenLDAP) match nothing, so there every answer is "not a member". An
// entry or group that does not exist is no membership; other errors are
// directory failures.
func (s *Source) MemberOf(ctx context.Context, dn string, groups []string) ([]string, error) {
	if len(groups) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	var lastErr error
	// One retry on a fresh connection, as for Lookup.
	for attempt := 0; attempt < 2; attempt++ {
		c, err := s.get(ctx)
		if err != nil {
			return nil, err
		}
		member, err := s.memberOf(ctx, c, dn, groups)
		if err != nil && (isConnError(err) || c.IsClosing() || ctx.Err() != nil) {
			s.discard(c)
			lastErr = err
			if ctx.Err() != nil {
				return nil, fmt.Errorf("ldap group search at %s: %w", s.targets[c.target].url, ctx.Err())
			}
			continue
		}
		s.put(c)
		if err != nil {
			return nil, fmt.Errorf("ldap group search at %s: %w", s.targets[c.target].url, err)
		}
		return member, nil
	}
	return nil, fmt.Errorf("ldap group search: %w", lastErr)
}

func (s *Source) memberOf(ctx context.Context, c *conn, dn string, groups []string) ([]string, error) {
	var member []string
	for _, g := range groups {
		deadline, _ := ctx.Deadline()
		c.SetTimeout(time.Until(deadline))
		filter := "(memberOf:" + MatchingRuleInChain + ":=" + ldap.EscapeFilter(g) + ")"
		req := ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
			1, int(max(1, time.Until(deadline).Seconds())), false, filter, []string{"1.1"}, nil)
		res, err := c.Search(req)
		switch {
		case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
			return nil, nil // the entry is gone: no memberships
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if len(res.Entries) > 0 {
			member = append(member, g)
		}
	}
	return member, nil
}
