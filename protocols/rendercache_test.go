package protocols

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
)

func TestRenderCached(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	resolve := func(addr string) *policy.Account {
		t.Helper()
		a, err := res.Resolve(t.Context(), mustAddress(t, addr))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tc := range []struct {
		addr   string
		shared bool // the second answer is the first one's bytes
	}{
		{"alice@example.com", true},
		{"bob@example.com", true},
		{"nobody@example.com", false}, // defaults: made per request, not kept
		{"carol@example.com", false},  // disabled: likewise
	} {
		t.Run(tc.addr, func(t *testing.T) {
			a1 := resolve(tc.addr)
			b1, err := renderAutoconfigCached(a1)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := renderAutoconfig(a1)
			if !bytes.Equal(b1, want) {
				t.Fatalf("cached render differs from the renderer's")
			}
			b2, _ := renderAutoconfigCached(resolve(tc.addr))
			if !bytes.Equal(b1, b2) {
				t.Fatalf("second answer differs")
			}
			if same := &b1[0] == &b2[0]; same != tc.shared {
				t.Errorf("second answer shared the first one's bytes: %v; want %v", same, tc.shared)
			}
			o1, ok1, err1 := renderOutlookCached(a1)
			o2, ok2, err2 := renderOutlook(a1)
			if !bytes.Equal(o1, o2) || ok1 != ok2 || (err1 == nil) != (err2 == nil) {
				t.Errorf("Outlook: cached %v %v, renderer %v %v", ok1, err1, ok2, err2)
			}
		})
	}
	// An account with nothing for Outlook stays "no settings" when cached.
	empty := &policy.Account{Known: true, Domain: resolve("bob@example.com").Domain, Primary: "x@example.com"}
	for range 2 {
		if _, ok, err := renderOutlookCached(empty); ok || err != nil {
			t.Errorf("empty account: ok %v, %v", ok, err)
		}
	}
	// The table stays bounded.
	d := resolve("bob@example.com").Domain
	for i := range maxRendered + 100 {
		a := &policy.Account{Known: true, Domain: d, Primary: fmt.Sprintf("u%d@example.com", i)}
		if _, err := renderAutoconfigCached(a); err != nil {
			t.Fatal(err)
		}
		if n := rendered.n.Load(); n > maxRendered {
			t.Fatalf("%d entries; want at most %d", n, maxRendered)
		}
	}
}

func TestParsePOXRequestCached(t *testing.T) {
	bodies := []string{adXML("bob@example.com"), adXML("alice@example.com"), "<nope", "", `<!DOCTYPE x><Autodiscover/>`,
		adXML("bob@example.com") + string(bytes.Repeat([]byte(" "), maxMemoPOXLen))}
	for range 2 {
		for _, b := range bodies {
			got, gerr := parsePOXRequestCached([]byte(b))
			want, werr := parsePOXRequest([]byte(b))
			if got != want || (gerr == nil) != (werr == nil) {
				t.Errorf("%.40q: cached %+v, %v; parser %+v, %v", b, got, gerr, want, werr)
			}
		}
	}
	for i := range maxParsedPOX + 10 {
		if _, err := parsePOXRequestCached([]byte(adXML(fmt.Sprintf("u%d@example.com", i)))); err != nil {
			t.Fatal(err)
		}
	}
	parsedPOX.mu.RLock()
	n := len(parsedPOX.m)
	parsedPOX.mu.RUnlock()
	if n > maxParsedPOX {
		t.Errorf("%d parsed bodies kept; want at most %d", n, maxParsedPOX)
	}
}
