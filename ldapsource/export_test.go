package ldapsource

import "time"

// SetBreakerCooldown sets how long s's breakers stay open before their
// probe, and between probes: tests shorten it.
func SetBreakerCooldown(s *Source, d time.Duration) { s.cooldown = d }

// BreakerOpen reports whether the breaker of s's i-th URL is open.
func BreakerOpen(s *Source, i int) bool { return s.breakers[i].opened() }
