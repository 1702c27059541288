package protocols

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func BenchmarkProbeAutoconfig(b *testing.B) {
	res, _ := newDemoResolver(b, demoDomains())
	h := NewHandler(res, Options{})
	req := httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

func BenchmarkProbePOX(b *testing.B) {
	res, _ := newDemoResolver(b, demoDomains())
	h := NewHandler(res, Options{})
	body := `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>bob@example.com</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "https://autodiscover.example.com/autodiscover/autodiscover.xml", strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
