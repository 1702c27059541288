package ldapsource

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the directory metrics, shared by every Source handed them
// (a reload builds a new Source that keeps counting into the same ones).
type Metrics struct {
	searchFound, searchNotFound, searchAmbiguous, searchError prometheus.Observer

	connectionsInUse prometheus.Gauge
	failovers        prometheus.Counter
	bindBackoffs     prometheus.Counter
	dialErrors       *prometheus.CounterVec
	breakerOpen      *prometheus.GaugeVec
}

// NewMetrics registers the directory metrics on reg; it panics if reg has
// them already. Made for a nil reg they are registered nowhere, so nobody
// sees what they record; a nil *Metrics does the same.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	searchDuration := f.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mailbeacon_directory_search_duration_seconds",
		Help: "Duration of one address lookup in the directory, waiting for a pooled connection and dialing included, by result: found, not_found, ambiguous, error.",
		// Lookups are bounded by ldap.request_timeout (3s by default).
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"result"})
	return &Metrics{
		// Label children resolved once, off the request path.
		searchFound:     searchDuration.WithLabelValues("found"),
		searchNotFound:  searchDuration.WithLabelValues("not_found"),
		searchAmbiguous: searchDuration.WithLabelValues("ambiguous"),
		searchError:     searchDuration.WithLabelValues("error"),
		connectionsInUse: f.NewGauge(prometheus.GaugeOpts{
			Name: "mailbeacon_directory_connections_in_use",
			Help: "Directory connections checked out of the pool or being dialed (at most ldap.pool_size per configuration).",
		}),
		failovers: f.NewCounter(prometheus.CounterOpts{
			Name: "mailbeacon_directory_failovers_total",
			Help: "Times the preferred directory URL failed and another one answered.",
		}),
		bindBackoffs: f.NewCounter(prometheus.CounterOpts{
			Name: "mailbeacon_directory_bind_backoffs_total",
			Help: "Times a bind as the service account failed on a configuration error (credentials refused, certificate not verified, strong authentication required) and binds were held back for a backoff interval.",
		}),
		dialErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbeacon_directory_dial_errors_total",
			Help: "Failed attempts to connect and bind to a directory URL, by URL.",
		}, []string{"url"}),
		breakerOpen: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mailbeacon_directory_breaker_open",
			Help: "1 while a directory URL timed out or refused connections and requests leave it alone until a background probe gets an answer, else 0 (2 for a moment when a reload overlaps).",
		}, []string{"url"}),
	}
}

// observeSearch records a lookup's duration under its result.
func (m *Metrics) observeSearch(seconds float64, err error) {
	switch {
	case err == nil:
		m.searchFound.Observe(seconds)
	case errors.Is(err, ErrNotFound):
		m.searchNotFound.Observe(seconds)
	case errors.Is(err, ErrAmbiguous):
		m.searchAmbiguous.Observe(seconds)
	default:
		m.searchError.Observe(seconds)
	}
}
