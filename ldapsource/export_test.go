package ldapsource

import (
	"math/rand/v2"
	"time"

	"github.com/miekg/dns"
)

// SetBreakerCooldown sets how long s's breakers stay open before their
// probe, and between probes: tests shorten it.
func SetBreakerCooldown(s *Source, d time.Duration) { s.cooldown = d }

// BreakerOpen reports whether the breaker of s's i-th URL is open.
func BreakerOpen(s *Source, i int) bool { return s.breakers[i].opened() }

// HoldServiceBinds takes the one service-account bind slot of s, as a bind
// under way would, until the returned function is called.
func HoldServiceBinds(s *Source) (release func()) {
	s.gate.binding <- struct{}{}
	return func() { <-s.gate.binding }
}

// SetSRVTTLBounds sets how long, at least and at most, s uses a list of
// servers DNS gave before asking again: tests shorten them.
func SetSRVTTLBounds(s *Source, lo, hi time.Duration) { s.srv.minTTL, s.srv.maxTTL = lo, hi }

// OrderSRV orders SRV records as a source does, drawing from rnd.
func OrderSRV(rrs []*dns.SRV, rnd *rand.Rand) []*dns.SRV { return orderSRV(rrs, rnd) }

// DropIdle closes s's idle connections, so that the next lookup dials.
func DropIdle(s *Source) {
	for i := range s.targets {
		s.dropIdle(i)
	}
}
