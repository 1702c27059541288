package protocols

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Every answer of the client endpoints leaves through write (send,
// sendAnswer, text, redirect), and every failure of every stage is turned
// into an answer by fail: one place per concern.

// answerStyle is how a route's failures are answered.
type answerStyle uint8

const (
	answerText answerStyle = iota // HTTP status and a short plain-text body
	answerPOX                     // Autodiscover error document in HTTP 200
	answerJSON                    // Autodiscover v2 error object
	answerPage                    // the setup page with a sentence for a person
)

var (
	errNotFound        = errors.New("no such endpoint")
	errBadAddress      = errors.New("invalid e-mail address")
	errMissingAddress  = errors.New("missing emailaddress parameter")
	errNoAuthenticator = errors.New("autodiscover.require_auth: the resolver cannot check passwords")
)

// methodError: the route does not take the request's method.
type methodError struct{ allowed []string }

func (e *methodError) Error() string { return "method not allowed" }

// limitError: a per-client or shared limit refused the request. It is
// answered with the same HTTP status in every format: a client that is
// being throttled must see it as such, not as a protocol error.
type limitError struct {
	reason limitReason
	wait   time.Duration
}

func (e *limitError) Error() string { return "refused by the limits: " + limitReasonNames[e.reason] }

// httpError is an answer a handler chose: a status and a fixed message.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// poxErrorCode: the answer is an Autodiscover error document of this code.
type poxErrorCode int

func (e poxErrorCode) Error() string { return "autodiscover error " + strconv.Itoa(int(e)) }

// authError: authenticated discovery wants (other) credentials.
type authError struct{ failed bool }

func (e authError) Error() string { return "authentication required" }

// lookupFailure is what a lookup error means for an answer.
type lookupFailure uint8

const (
	lookupUnknownDomain lookupFailure = iota + 1
	lookupRejected
	lookupUnavailable
	lookupInternal
)

// classify sorts a resolver error, logging anything unexpected at error.
// An outage is logged at debug only: policy logs the directory's failures
// once per change of state, and a warning per request would let any
// client fill the log. A lookup the client gave up on says nothing about
// the directory.
func (c *call) classify(err error) lookupFailure {
	switch {
	case errors.Is(err, policy.ErrUnknownDomain):
		return lookupUnknownDomain
	case errors.Is(err, policy.ErrRejected):
		return lookupRejected
	case errors.Is(err, policy.ErrDirectoryUnavailable):
		c.h.log.Debug("directory unavailable", "format", c.rt.name, "err", err)
		return lookupUnavailable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		c.h.log.Debug("lookup given up", "format", c.rt.name, "err", err)
		return lookupUnavailable
	}
	c.h.log.Error("request failed", "format", c.rt.name, "err", err)
	return lookupInternal
}

// fail answers err in the terms of the request's route.
func (c *call) fail(err error) {
	if c.unread() {
		c.hangUp()
	}
	var (
		lim  *limitError
		meth *methodError
		herr *httpError
		pox  poxErrorCode
		auth authError
	)
	switch {
	case errors.As(err, &lim):
		c.h.met.limited[lim.reason].Inc()
		c.refuse(lim)
		return
	case errors.As(err, &meth):
		c.w.Header().Set("Allow", strings.Join(meth.allowed, ", "))
		c.text(http.StatusMethodNotAllowed, "method not allowed")
		return
	case errors.Is(err, errNotFound):
		c.text(http.StatusNotFound, "not found")
		return
	case errors.As(err, &auth):
		c.h.ad.challenge(c, auth.failed)
		return
	case errors.As(err, &pox):
		c.h.ad.poxError(c, int(pox))
		return
	case errors.As(err, &herr):
		c.text(herr.status, herr.msg)
		return
	}
	switch c.rt.answer {
	case answerPOX:
		c.h.ad.poxFail(c, err)
	case answerJSON:
		c.h.ad.jsonFail(c, err)
	case answerPage:
		c.h.setupFail(c, err)
	default:
		c.textFail(err)
	}
}

// textFail answers a lookup or request error with a status and a fixed
// message: nothing from the request is echoed.
func (c *call) textFail(err error) {
	if errors.Is(err, errBadAddress) || errors.Is(err, errMissingAddress) {
		c.text(http.StatusBadRequest, err.Error())
		return
	}
	switch c.classify(err) {
	case lookupUnknownDomain:
		c.text(http.StatusNotFound, "domain not served here")
	case lookupRejected:
		c.text(http.StatusNotFound, "no configuration for this address")
	case lookupUnavailable:
		c.w.Header().Set("Retry-After", "30")
		c.text(http.StatusServiceUnavailable, "directory unavailable, try again later")
	default:
		c.text(http.StatusInternalServerError, "internal error")
	}
}

// refusals is the answer to each limit's refusal.
var refusals = [numLimitReasons]struct {
	status int
	msg    string
}{
	limitRequests:          {http.StatusTooManyRequests, "too many requests, try again later"},
	limitUnknown:           {http.StatusTooManyRequests, "too many requests, try again later"},
	limitClientConcurrency: {http.StatusTooManyRequests, "too many requests, try again later"},
	limitConcurrency:       {http.StatusServiceUnavailable, "server busy, try again later"},
	limitBody:              {http.StatusRequestEntityTooLarge, "request body too large"},
	limitBodyTimeout:       {http.StatusRequestTimeout, "request body not received in time"},
	limitBodyRead:          {http.StatusBadRequest, "could not read the request body"},
}

// refuse answers a request the limits refused.
func (c *call) refuse(e *limitError) {
	r := refusals[e.reason]
	if e.reason >= limitBody {
		// The body is unread, partly read or broken.
		c.hangUp()
	} else {
		secs := int64(math.Ceil(e.wait.Seconds()))
		c.w.Header().Set("Retry-After", strconv.FormatInt(max(1, secs), 10))
	}
	c.text(r.status, r.msg)
}

// hangUp makes the answer the connection's last, sent without reading
// what is left of the request's body. Unless told that the connection
// closes, net/http reads an unread body (up to 256 KiB) before it writes
// the answer's header, for as long as the sender trickles it, up to the
// read timeout; with Connection: close it skips that but still reads the
// rest when it closes the body after the handler, so the read deadline
// is set to now (readBody has cleared its own): a stalled sender then
// costs nothing more. HTTP/2 reads no body it was not asked to (the
// stream is reset) and would end every other stream of the connection
// for a Connection: close, so it gets none.
func (c *call) hangUp() {
	if c.r.ProtoMajor < 2 {
		c.w.Header().Set("Connection", "close")
	}
	_ = http.NewResponseController(c.w).SetReadDeadline(time.Now())
}

// Shared header values, never modified: Header.Set would allocate a
// slice per header on every request of the hottest paths.
var (
	textContentType = []string{"text/plain; charset=utf-8"}
	xmlContentType  = []string{"text/xml; charset=utf-8"}
	jsonContentType = []string{"application/json; charset=utf-8"}
	noSniff         = []string{"nosniff"}
	privateNoCache  = []string{"private, no-cache"}
	noStore         = []string{"no-store"}
)

// text answers with a short plain-text body.
func (c *call) text(status int, msg string) {
	c.send(status, textContentType, noStore, []byte(msg+"\n"))
}

// send writes an answer. cache nil keeps a Cache-Control the caller set.
func (c *call) send(status int, contentType, cache []string, body []byte) {
	c.write(status, contentType, cache, body, []string{strconv.Itoa(len(body))})
}

// sendAnswer sends a rendered answer.
func (c *call) sendAnswer(status int, contentType, cache []string, a *answer) {
	c.write(status, contentType, cache, a.body, a.length)
}

func (c *call) write(status int, contentType, cache []string, body []byte, length []string) {
	h := c.w.Header()
	h["Content-Type"] = contentType
	h["X-Content-Type-Options"] = noSniff
	if cache != nil {
		h["Cache-Control"] = cache
	}
	h["Content-Length"] = length
	c.writeHeader(status)
	if c.r.Method != http.MethodHead && len(body) > 0 {
		_, _ = c.w.Write(body)
	}
}

// redirect answers with a Location from the configuration, never from
// the request.
func (c *call) redirect(status int, location string, cache []string) {
	h := c.w.Header()
	h["Cache-Control"] = cache
	h.Set("Location", location)
	h["Content-Length"] = []string{"0"}
	c.writeHeader(status)
}

func (c *call) writeHeader(status int) {
	c.status = status
	c.w.WriteHeader(status)
}

// hostName is the host part of a Host header.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return host
}
