package protocols

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Renderers are pure functions of an Account, and the resolver hands out
// the same *Account for an address until its cache entry is replaced, so
// the rendered bytes of a cached account can be kept and sent again: on
// the cached hot path a request then costs a map lookup instead of an XML
// encoding (about 13 µs for autoconfig, 25 µs for Outlook's answer).
//
// Accounts are immutable once a resolver returned them (policy copies an
// account rather than change it), so an entry can never go out of date:
// a changed account is a new pointer and a new key. Only accounts the
// directory knows are kept; the defaults for an unknown address are made
// afresh for every request and would never be asked for twice.
//
// The table is bounded: when it holds maxRendered entries it is emptied
// and fills again with what is asked for. Entries of accounts the resolver
// has replaced stay until then, which bounds the memory they hold.

// renderFormat names one renderer.
type renderFormat uint8

const (
	formatAutoconfig renderFormat = iota + 1
	formatOutlook
	formatMobilesync
)

type renderKey struct {
	acct   *policy.Account
	format renderFormat
}

const (
	maxRendered = 4096
	slabSize    = 256 << 10
)

var rendered struct {
	m sync.Map // renderKey -> []byte
	n atomic.Int64

	mu   sync.Mutex
	slab []byte // rendered bytes are copied here, not kept one by one
}

// renderCached returns render(a), from the table when a is an account the
// directory knows. The returned bytes are shared: callers must not change
// them.
func renderCached(a *policy.Account, f renderFormat, render func(*policy.Account) ([]byte, error)) ([]byte, error) {
	if a == nil || !a.Known {
		return render(a)
	}
	k := renderKey{a, f}
	if v, ok := rendered.m.Load(k); ok {
		return v.([]byte), nil
	}
	b, err := render(a)
	if err != nil {
		return nil, err
	}
	if rendered.n.Add(1) > maxRendered {
		rendered.m.Clear()
		rendered.n.Store(1)
	}
	b = keep(b)
	rendered.m.Store(k, b)
	return b, nil
}

// keep copies b into the current slab. Thousands of small long-lived
// buffers among a request's garbage would each pin a span of the heap;
// slabs are dropped whole once no entry refers to them any more.
func keep(b []byte) []byte {
	if len(b) > slabSize/4 {
		return bytes.Clone(b)
	}
	rendered.mu.Lock()
	defer rendered.mu.Unlock()
	if len(rendered.slab)+len(b) > cap(rendered.slab) {
		rendered.slab = make([]byte, 0, slabSize)
	}
	off := len(rendered.slab)
	rendered.slab = append(rendered.slab, b...)
	return rendered.slab[off:len(rendered.slab):len(rendered.slab)]
}

// The cached forms of the renderers, with their signatures, for the
// handlers.

func renderAutoconfigCached(a *policy.Account) ([]byte, error) {
	return renderCached(a, formatAutoconfig, renderAutoconfig)
}

func renderMobilesyncCached(a *policy.Account) ([]byte, error) {
	return renderCached(a, formatMobilesync, renderMobilesync)
}

// renderOutlookCached keeps "no settings for Outlook" as an empty body.
func renderOutlookCached(a *policy.Account) (body []byte, ok bool, err error) {
	body, err = renderCached(a, formatOutlook, func(a *policy.Account) ([]byte, error) {
		b, ok, err := renderOutlook(a)
		if !ok {
			b = []byte{}
		}
		return b, err
	})
	return body, err == nil && len(body) > 0, err
}

// Outlook sends the same Autodiscover request body for a user every time
// it asks, and parsing it (encoding/xml, about 10 µs) costs more than the
// rest of a cached answer. Successful parses of small bodies are kept in a
// bounded table keyed by the body; parsePOXRequest is a pure function of
// it.
const (
	maxParsedPOX  = 4096
	maxMemoPOXLen = 2048 // longer bodies are parsed every time
)

var parsedPOX struct {
	mu sync.RWMutex
	m  map[string]poxRequest
}

func parsePOXRequestCached(body []byte) (poxRequest, error) {
	if len(body) > maxMemoPOXLen {
		return parsePOXRequest(body)
	}
	parsedPOX.mu.RLock()
	req, ok := parsedPOX.m[string(body)]
	parsedPOX.mu.RUnlock()
	if ok {
		return req, nil
	}
	req, err := parsePOXRequest(body)
	if err != nil {
		return req, err
	}
	parsedPOX.mu.Lock()
	if len(parsedPOX.m) >= maxParsedPOX || parsedPOX.m == nil {
		parsedPOX.m = make(map[string]poxRequest)
	}
	parsedPOX.m[string(body)] = req
	parsedPOX.mu.Unlock()
	return req, nil
}
