package policy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the resolver's cache and directory-outcome metrics, shared
// by every Resolver handed them (a reload builds a new Resolver that keeps
// counting into the same ones).
type Metrics struct {
	// Label children resolved once, off the request path.
	cacheHit, cacheNegative, cacheMiss, cacheStale prometheus.Counter
	directoryToDefaults, directoryToError          prometheus.Counter
	cacheEvictedNegative, cacheEvictedAccount      prometheus.Counter

	directoryFailures *prometheus.CounterVec

	// Authenticated Autodiscover: passwords refused without a bind, by
	// reason, and the accounts whose refused binds are spent.
	authRefusedRepeated, authRefusedPaused, authRefusedFull prometheus.Counter
	authPausedAccounts                                      prometheus.Gauge
	authRefusalsLate                                        prometheus.Counter
}

// NewMetrics registers the resolver metrics on reg; it panics if reg has
// them already. Made for a nil reg they are registered nowhere, so nobody
// sees what they record; a nil *Metrics does the same.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	cacheLookups := f.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_cache_lookups_total",
		Help: "Resolver cache lookups by result: hit (a fresh account), negative (a fresh \"unknown or disabled\"), " +
			"miss (the directory was asked; concurrent misses for one address share one search), " +
			"stale (the directory failed and an expired entry was served; also counted as a miss).",
	}, []string{"result"})
	directoryFallbacks := f.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_directory_unavailable_answers_total",
		Help: "Lookups the directory failed with nothing usable cached, by what was answered: defaults (the domain's services) or error (cache.on_directory_error: fail).",
	}, []string{"answer"})
	cacheEvictions := f.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_cache_evictions_total",
		Help: "Cache entries pushed out by cache.max_entries, by what they held: unknown (an unknown or disabled address; these go first) or account.",
	}, []string{"entry"})
	authRefused := f.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_auth_refused_without_bind_total",
		Help: "Authenticated Autodiscover passwords refused without binding as the user, by reason: repeated (refused for this account before), " +
			"paused (autodiscover.bind_failures refused binds of this account within autodiscover.bind_pause), " +
			"full (too many accounts with refused binds are remembered to count one more).",
	}, []string{"reason"})
	return &Metrics{
		authRefusedRepeated: authRefused.WithLabelValues("repeated"),
		authRefusedPaused:   authRefused.WithLabelValues("paused"),
		authRefusedFull:     authRefused.WithLabelValues("full"),
		authPausedAccounts: f.NewGauge(prometheus.GaugeOpts{
			Name: "mailbeacon_auth_paused_accounts",
			Help: "Accounts that authenticated Autodiscover binds as no more (but for a password that bound recently): their refused binds reached autodiscover.bind_failures. " +
				"An account is counted until an authenticated request after its pause ends.",
		}),
		authRefusalsLate: f.NewCounter(prometheus.CounterOpts{
			Name: "mailbeacon_auth_refusals_late_total",
			Help: "Authenticated Autodiscover refusals answered after autodiscover.refusal_time because the directory took longer: " +
				"their time can tell an address with an account from one without. Raise refusal_time when this grows.",
		}),
		cacheHit:             cacheLookups.WithLabelValues("hit"),
		cacheNegative:        cacheLookups.WithLabelValues("negative"),
		cacheMiss:            cacheLookups.WithLabelValues("miss"),
		cacheStale:           cacheLookups.WithLabelValues("stale"),
		directoryToDefaults:  directoryFallbacks.WithLabelValues("defaults"),
		directoryToError:     directoryFallbacks.WithLabelValues("error"),
		cacheEvictedNegative: cacheEvictions.WithLabelValues("unknown"),
		cacheEvictedAccount:  cacheEvictions.WithLabelValues("account"),
		directoryFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbeacon_directory_failures_total",
			Help: "Directory lookups that failed, by kind: configuration (credentials refused, certificate not verified: fix the configuration) or transient (refused, timeout, busy).",
		}, []string{"kind"}),
	}
}

// authRefused counts a password refused without a bind.
func (m *Metrics) authRefused(reason string) {
	switch reason {
	case "repeated":
		m.authRefusedRepeated.Inc()
	case "paused":
		m.authRefusedPaused.Inc()
	case "full":
		m.authRefusedFull.Inc()
	}
}
