package policy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	cacheLookups = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_cache_lookups_total",
		Help: "Resolver cache lookups by result: hit (a fresh account), negative (a fresh \"unknown or disabled\"), " +
			"miss (the directory was asked; concurrent misses for one address share one search), " +
			"stale (the directory failed and an expired entry was served; also counted as a miss).",
	}, []string{"result"})
	directoryFallbacks = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_directory_unavailable_answers_total",
		Help: "Lookups the directory failed with nothing usable cached, by what was answered: defaults (the domain's services) or error (cache.on_directory_error: fail).",
	}, []string{"answer"})

	// Label children resolved once, off the request path.
	cacheHit            = cacheLookups.WithLabelValues("hit")
	cacheNegative       = cacheLookups.WithLabelValues("negative")
	cacheMiss           = cacheLookups.WithLabelValues("miss")
	cacheStale          = cacheLookups.WithLabelValues("stale")
	directoryToDefaults = directoryFallbacks.WithLabelValues("defaults")
	directoryToError    = directoryFallbacks.WithLabelValues("error")
)
