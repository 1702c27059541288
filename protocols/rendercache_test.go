package protocols

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
)

// freshRender renders a's answer of format f with a new encoder.
func freshRender(t *testing.T, f renderFormat, a *policy.Account) []byte {
	t.Helper()
	var b []byte
	var err error
	switch f {
	case formatAutoconfig:
		b, err = renderAutoconfig(a)
	case formatOutlook:
		var ok bool
		if b, ok, err = renderOutlook(a); !ok && err == nil {
			b = []byte{}
		}
	case formatMobilesync:
		b, err = renderMobilesync(a)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A pooled encoder, used again and again for documents of every kind,
// writes what a new one writes, byte for byte.
func TestRenderDocEncoderReused(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	e := newDocEncoder()
	for round := range 3 {
		for _, addr := range []string{"alice@example.com", "bob@example.com", "nobody@example.com"} {
			a, err := res.Resolve(t.Context(), mustAddress(t, addr))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []renderFormat{formatAutoconfig, formatOutlook, formatMobilesync} {
				doc := documents[f](a)
				if doc == nil {
					continue
				}
				got, err := e.encode(doc)
				if err != nil {
					t.Fatal(err)
				}
				if want := freshRender(t, f, a); !bytes.Equal(got, want) {
					t.Fatalf("round %d, %s, format %d: pooled encoder wrote\n%s\nwant\n%s", round, addr, f, got, want)
				}
			}
		}
	}
}

func TestRenderCached(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	rc := newRenderCache()
	resolve := func(addr string) *policy.Account {
		t.Helper()
		a, err := res.Resolve(t.Context(), mustAddress(t, addr))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, addr := range []string{
		"alice@example.com", "bob@example.com",
		// The domain defaults, a new Account for every request, are kept
		// like a known answer: a warm unknown address costs what a warm
		// known one does.
		"nobody@example.com", "carol@example.com",
	} {
		t.Run(addr, func(t *testing.T) {
			for _, f := range []renderFormat{formatAutoconfig, formatOutlook, formatMobilesync} {
				a1 := resolve(addr)
				ans1, err := rc.render(a1, f)
				if err != nil {
					t.Fatal(err)
				}
				want := freshRender(t, f, a1)
				if !bytes.Equal(ans1.body, want) || ans1.length[0] != fmt.Sprint(len(want)) {
					t.Fatalf("format %d: cached render differs from the renderer's", f)
				}
				ans2, _ := rc.render(resolve(addr), f)
				if ans1 != ans2 {
					t.Errorf("format %d: second answer not the first one", f)
				}
			}
		})
	}
	// Defaults for two addresses, or with another login, are two answers.
	d := resolve("bob@example.com").Domain
	render := func(a *policy.Account) []byte {
		ans, err := rc.render(a, formatAutoconfig)
		if err != nil {
			t.Fatal(err)
		}
		return ans.body
	}
	x := render(d.DefaultAccount(mustAddress(t, "x@example.com"), "x@example.com"))
	y := render(d.DefaultAccount(mustAddress(t, "y@example.com"), "y@example.com"))
	z := render(d.DefaultAccount(mustAddress(t, "x@example.com"), "zed"))
	if bytes.Equal(x, y) || bytes.Equal(x, z) || !bytes.Contains(z, []byte("<username>zed</username>")) {
		t.Errorf("defaults mixed up:\n%s\n%s\n%s", x, y, z)
	}
	// An unknown account that is not exactly the defaults is not kept.
	odd := d.DefaultAccount(mustAddress(t, "x@example.com"), "x@example.com")
	odd.Services = odd.Services[:1]
	if _, ok := cacheKey(odd, formatAutoconfig); ok {
		t.Error("a trimmed unknown account has a cache key")
	}
	// An account with nothing for Outlook stays "no settings" when cached.
	empty := &policy.Account{Known: true, Domain: d, Primary: "x@example.com"}
	for range 2 {
		if ans, err := rc.render(empty, formatOutlook); err != nil || len(ans.body) != 0 {
			t.Errorf("empty account: %v, %v", ans, err)
		}
	}
	// The table stays bounded.
	for i := range maxRendered + 100 {
		a := &policy.Account{Known: true, Domain: d, Primary: fmt.Sprintf("u%d@example.com", i)}
		if _, err := rc.render(a, formatAutoconfig); err != nil {
			t.Fatal(err)
		}
		if n := rc.answers.n.Load(); n > maxRendered {
			t.Fatalf("%d entries; want at most %d", n, maxRendered)
		}
	}
	// Each handler has its own table: a reload starts empty.
	res2, _ := newDemoResolver(t, demoDomains())
	h1, h2 := NewHandler(res2, Options{}), NewHandler(res2, Options{})
	if h1.cache == h2.cache {
		t.Error("two handlers share a render cache")
	}
}

func TestParsePOXRequestCached(t *testing.T) {
	rc := newRenderCache()
	bodies := []string{adXML("bob@example.com"), adXML("alice@example.com"), "<nope", "", `<!DOCTYPE x><Autodiscover/>`,
		adXML("bob@example.com") + string(bytes.Repeat([]byte(" "), maxMemoPOXLen))}
	for range 2 {
		for _, b := range bodies {
			got, gerr := rc.parsePOX([]byte(b))
			want, werr := parsePOXRequest([]byte(b))
			if got != want || (gerr == nil) != (werr == nil) {
				t.Errorf("%.40q: cached %+v, %v; parser %+v, %v", b, got, gerr, want, werr)
			}
		}
	}
	for i := range maxParsedPOX + 10 {
		if _, err := rc.parsePOX([]byte(adXML(fmt.Sprintf("u%d@example.com", i)))); err != nil {
			t.Fatal(err)
		}
	}
	rc.poxMu.RLock()
	n := len(rc.parsed)
	rc.poxMu.RUnlock()
	if n > maxParsedPOX {
		t.Errorf("%d parsed bodies kept; want at most %d", n, maxParsedPOX)
	}
}

// An unknown address's answer is kept rendered also when the domain
// offers unknown addresses fewer services than it has (default_services):
// else a warm unknown address would cost a rendering that a warm known one
// does not, and timing would tell them apart.
func TestRenderCacheKeepsDefaultServicesAnswers(t *testing.T) {
	cfgs := demoDomains()
	cfgs[0].DefaultServices = []string{"imap", "smtp"}
	ds, err := policy.NewDomains(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	d := ds["example.com"]
	addr := policy.Address{Local: "nobody", Domain: "example.com"}
	a := d.DefaultAccount(addr, addr.String())
	if len(a.Services) == len(d.Services) {
		t.Fatalf("default_services did not narrow the defaults: %d services", len(a.Services))
	}
	k, ok := cacheKey(a, formatAutoconfig)
	if !ok || k.login != addr.String() {
		t.Fatalf("cacheKey(defaults) = %+v, %v; want a key by domain, address and login", k, ok)
	}
	// A known account with the same services is not taken for the defaults.
	other := *a
	other.Services = append([]policy.Service(nil), a.Services...)
	other.Services[0].Host = "elsewhere.example.com"
	if _, ok := cacheKey(&other, formatAutoconfig); ok {
		t.Errorf("an account that differs from the defaults got a defaults key")
	}
	rc := newRenderCache()
	first, err := rc.render(a, formatAutoconfig)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := rc.render(d.DefaultAccount(addr, addr.String()), formatAutoconfig)
	if first != again {
		t.Errorf("the second unknown answer was rendered again, not kept")
	}
}
