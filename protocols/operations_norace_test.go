//go:build !race

package protocols

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Recording a request's metrics allocates nothing: the cached autoconfig
// path is benchmarked against nginx. (Not under the race detector, which
// makes sync.Pool drop items on purpose.)
func TestInstrumentDoesNotAllocate(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	h := s.instrument(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) }))
	req := httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", nil)
	w := httptest.NewRecorder()
	if n := testing.AllocsPerRun(200, func() { h.ServeHTTP(w, req) }); n != 0 {
		t.Errorf("instrument allocates %v times per request, want 0", n)
	}
}
