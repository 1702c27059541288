package protocols

import (
	"bytes"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/mailbeacon/mailbeacon/policy"
)

// renderCache keeps rendered answers and parsed request bodies for one
// handler: a reload makes a new handler and so starts empty, and tests do
// not share it.
//
// Renderers are pure functions of an Account. The resolver hands out the
// same *Account for a known address until its cache entry is replaced,
// and accounts are immutable once returned (policy copies an account
// rather than change it), so a known account's answer is keyed by the
// pointer and can never go out of date; an account whose destination
// redirects it or gives it other servers is its own pointer like any
// other known account, and so its own entry. The answer for an unknown address
// is the domain's defaults with the address as login, a new Account each
// time: it is keyed by what it is made of (domain, address, login), so a
// warm unknown address costs what a warm known one does, and timing tells
// neither apart.
//
// The table is bounded: when it holds maxRendered entries it is emptied
// and fills again with what is asked for.
type renderCache struct {
	answers clearingMap[renderKey, *answer]

	mu   sync.Mutex
	slab []byte // rendered bytes are copied here, not kept one by one

	placeholders clearingMap[*policy.Domain, *policy.Account]

	poxMu  sync.RWMutex
	parsed map[string]poxRequest

	encoders sync.Pool // *docEncoder
}

func newRenderCache() *renderCache { return &renderCache{} }

// renderFormat names one renderer.
type renderFormat uint8

const (
	formatAutoconfig renderFormat = iota + 1
	formatOutlook
	formatMobilesync
)

// documents builds the document of each format, to encode with
// encodeXMLDoc; nil is Outlook's "no settings", an empty body.
var documents = [...]func(*policy.Account) any{
	formatAutoconfig: func(a *policy.Account) any { return autoconfigDocument(a) },
	formatOutlook: func(a *policy.Account) any {
		if doc, ok := outlookDocument(a); ok {
			return doc
		}
		return nil
	},
	formatMobilesync: func(a *policy.Account) any { return mobilesyncDocument(a) },
}

// renderKey identifies an answer: a known account by pointer, a domain
// default by its parts.
type renderKey struct {
	acct   *policy.Account
	domain *policy.Domain
	addr   policy.Address
	login  string
	format renderFormat
}

const (
	maxRendered = 4096
	slabSize    = 256 << 10
)

// answer is a rendered body with its Content-Length value, made once: a
// cached answer is written without a conversion or an allocation.
type answer struct {
	body   []byte
	length []string
}

func newAnswer(b []byte) *answer { return &answer{body: b, length: []string{strconv.Itoa(len(b))}} }

// render returns the answer of format f for a, from the table when it
// can. The returned answer is shared: callers must not change it.
func (rc *renderCache) render(a *policy.Account, f renderFormat) (*answer, error) {
	k, ok := cacheKey(a, f)
	if !ok {
		b, err := rc.encode(documents[f](a), bytes.Clone)
		if err != nil {
			return nil, err
		}
		return newAnswer(b), nil
	}
	if ans, ok := rc.answers.load(k); ok {
		return ans, nil
	}
	b, err := rc.encode(documents[f](a), rc.keep)
	if err != nil {
		return nil, err
	}
	return rc.answers.store(k, newAnswer(b)), nil
}

// encode encodes doc as encodeXMLDoc does (nil: an empty body) with a
// pooled encoder, and returns what keep makes of the bytes, a copy.
func (rc *renderCache) encode(doc any, keep func([]byte) []byte) ([]byte, error) {
	if doc == nil {
		return []byte{}, nil
	}
	e, _ := rc.encoders.Get().(*docEncoder)
	if e == nil {
		e = newDocEncoder()
	}
	b, err := e.encode(doc)
	if err != nil {
		return nil, err
	}
	out := keep(b)
	if e.buf.Cap() <= maxPooledDoc {
		rc.encoders.Put(e)
	}
	return out, nil
}

// clearingMap is a table of at most maxRendered entries, bounded by
// emptying it when full: nothing to do per hit, and what is asked for
// fills it again.
type clearingMap[K comparable, V any] struct {
	m sync.Map
	n atomic.Int64
}

func (c *clearingMap[K, V]) load(k K) (V, bool) {
	v, ok := c.m.Load(k)
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

// store keeps v under k, unless a concurrent caller kept one first, and
// returns the one kept.
func (c *clearingMap[K, V]) store(k K, v V) V {
	if c.n.Add(1) > maxRendered {
		c.m.Clear()
		c.n.Store(1)
	}
	kept, _ := c.m.LoadOrStore(k, v)
	return kept.(V)
}

// cacheKey returns the key of a's answer, or false when a is neither a
// known account nor exactly its domain's defaults.
func cacheKey(a *policy.Account, f renderFormat) (renderKey, bool) {
	if a == nil || a.Domain == nil {
		return renderKey{}, false
	}
	if a.Known {
		return renderKey{acct: a, format: f}, true
	}
	login, ok := defaultsLogin(a)
	if !ok {
		return renderKey{}, false
	}
	return renderKey{domain: a.Domain, addr: a.Address, login: login, format: f}, true
}

// defaultsLogin reports whether a is its domain's DefaultAccount for its
// address, and with which login: then domain, address and login make the
// whole of it. The defaults are the domain's services that unknown
// addresses are offered (default_services), in the domain's order.
func defaultsLogin(a *policy.Account) (string, bool) {
	d := a.Domain
	// A destination makes an answer of its own (a redirect, other
	// servers): never one keyed by the domain's parts.
	if a.DisplayName != "" || a.DN != "" || a.Primary != a.Address.String() || a.Destination != nil {
		return "", false
	}
	login, i := "", 0
	for _, ds := range d.Services {
		if !d.OffersByDefault(ds.Kind) {
			continue
		}
		if i == len(a.Services) {
			return "", false
		}
		s := a.Services[i]
		if i == 0 {
			login = s.Login
		}
		if s.Login != login || s.Kind != ds.Kind || s.Host != ds.Host || s.Port != ds.Port ||
			s.Socket != ds.Socket || s.URL != ds.URL || !slices.Equal(s.Auth, ds.Auth) {
			return "", false
		}
		i++
	}
	return login, i == len(a.Services)
}

// keep copies b into the current slab. Thousands of small long-lived
// buffers among a request's garbage would each pin a span of the heap;
// slabs are dropped whole once no entry refers to them any more.
func (rc *renderCache) keep(b []byte) []byte {
	if len(b) > slabSize/4 {
		return bytes.Clone(b)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.slab)+len(b) > cap(rc.slab) {
		rc.slab = make([]byte, 0, slabSize)
	}
	off := len(rc.slab)
	rc.slab = append(rc.slab, b...)
	return rc.slab[off:len(rc.slab):len(rc.slab)]
}

// placeholder is the domain's answer when the request names no address:
// the defaults with Thunderbird's %EMAILADDRESS% as login (quirk 2). One
// per domain, so that its rendering is kept like any other. The table is
// bounded as the answers' is: a directory's domains come in new versions
// as their cache entries are refreshed, each a new key.
func (rc *renderCache) placeholder(d *policy.Domain) *policy.Account {
	if a, ok := rc.placeholders.load(d); ok {
		return a
	}
	return rc.placeholders.store(d, d.DefaultAccount(policy.Address{Domain: d.Name}, placeholderAddress))
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

func (rc *renderCache) parsePOX(body []byte) (poxRequest, error) {
	if len(body) > maxMemoPOXLen {
		return parsePOXRequest(body)
	}
	rc.poxMu.RLock()
	req, ok := rc.parsed[string(body)]
	rc.poxMu.RUnlock()
	if ok {
		return req, nil
	}
	req, err := parsePOXRequest(body)
	if err != nil {
		return req, err
	}
	rc.poxMu.Lock()
	if len(rc.parsed) >= maxParsedPOX || rc.parsed == nil {
		rc.parsed = make(map[string]poxRequest)
	}
	rc.parsed[string(body)] = req
	rc.poxMu.Unlock()
	return req, nil
}
