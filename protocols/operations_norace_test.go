//go:build !race

package protocols

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/mux"
)

// Recording a request's metrics allocates nothing: the cached paths are
// benchmarked against a bare net/http handler. (Not under the race
// detector, which changes allocation counts.)
func TestRecordDoesNotAllocate(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(res, Options{})
	req := httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", nil)
	c := &call{h: h, r: req, rt: h.find(req, new(mux.RouteMatch)), start: time.Now(), status: 200}
	if n := testing.AllocsPerRun(200, func() { h.record(c) }); n != 0 {
		t.Errorf("record allocates %v times per request, want 0", n)
	}
}
