package ldapsource

import "time"

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

// DropIdle closes s's idle connections, so that the next lookup dials.
func DropIdle(s *Source) {
	for i := range s.targets {
		s.dropIdle(i)
	}
}
