package protocols

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Autodiscover v2 (CLIENTS.md §3), which Microsoft has not
// published: the shapes follow Exchange Online as observed and reproduced
// by others.
//
//	GET /autodiscover/autodiscover.json?Email=…&Protocol=…&RedirectCount=…
//	GET /autodiscover/autodiscover.json/v1.0/{email}?Protocol=…
//
// Query keys and the Protocol value match case-insensitively: Outlook 2019
// sends Protocol=Autodiscoverv1 (quirk 19), Microsoft's own article
// protocol=. RedirectCount is accepted and ignored: this server never
// redirects v2 requests.

const (
	jsonPath       = "/autodiscover/autodiscover.json"
	jsonPathV1Pref = jsonPath + "/v1.0/"
)

// jsonPathEmail matches the two v2 paths in any letter case and returns the
// address from the /v1.0/{email} form ("" for the query form).
func jsonPathEmail(p string) (email string, ok bool) {
	if strings.EqualFold(p, jsonPath) {
		return "", true
	}
	if len(p) > len(jsonPathV1Pref) && strings.EqualFold(p[:len(jsonPathV1Pref)], jsonPathV1Pref) {
		email = p[len(jsonPathV1Pref):]
		if !strings.Contains(email, "/") {
			return email, true
		}
	}
	return "", false
}

// v2 protocol names as Exchange spells them in answers.
const (
	v2ActiveSync     = "ActiveSync"
	v2AutodiscoverV1 = "AutodiscoverV1"
	v2EWS            = "Ews"
)

type v2Answer struct {
	Protocol string `json:"Protocol"`
	URL      string `json:"Url"`
}

type v2Error struct {
	ErrorCode    string `json:"ErrorCode"`
	ErrorMessage string `json:"ErrorMessage"`
}

// json serves both v2 paths.
func (a *autodiscover) json(c *call) error {
	raw, _ := jsonPathEmail(c.r.URL.Path)
	if raw == "" {
		raw = queryValue(c.r, "Email")
	}
	addr, err := policy.ParseAddress(raw)
	if err != nil {
		return errBadAddress
	}
	c.note(addr)
	d, err := c.domain(addr.Domain)
	if err != nil {
		return err
	}
	proto := queryValue(c.r, "Protocol")
	switch {
	case strings.EqualFold(proto, v2AutodiscoverV1):
		// Domain data only: no directory search for the most common probe.
		// The POX endpoint it names answers a destination's redirect
		// (CLIENTS.md §3).
		return c.sendJSON(http.StatusOK, v2Answer{v2AutodiscoverV1, autodiscoverURL(d)})
	}
	// The ActiveSync and EWS answers and the list of supported values
	// depend on what this user may use, and where the mailbox lives (a
	// destination's services replace the domain's). With require_auth no
	// per-user data goes out unauthenticated: the domain's offer stands in
	// for the user's, and the POX answer (after the password) tells the
	// truth.
	var easURL string
	ewsURL := d.EWSURL
	if a.opts.RequireAuth {
		for _, s := range d.Services {
			if s.Kind == policy.ActiveSync {
				easURL = s.URL
				break
			}
		}
	} else {
		acct, err := c.resolve(addr)
		if err != nil {
			return err
		}
		if s, ok := acct.First(policy.ActiveSync); ok {
			easURL = s.URL
		}
		if acct.Destination != nil {
			// The mailbox lives behind the destination: its EWS, if the
			// user may use it there, never the domain's (CLIENTS.md §3).
			ewsURL = ""
			if s, ok := acct.First(policy.EWS); ok {
				ewsURL = s.URL
			}
		}
	}
	if strings.EqualFold(proto, "EWS") && ewsURL != "" {
		return c.sendJSON(http.StatusOK, v2Answer{v2EWS, ewsURL})
	}
	if strings.EqualFold(proto, v2ActiveSync) && easURL != "" {
		return c.sendJSON(http.StatusOK, v2Answer{v2ActiveSync, easURL})
	}
	supported := []string{}
	if easURL != "" {
		supported = append(supported, v2ActiveSync)
	}
	supported = append(supported, v2AutodiscoverV1)
	if ewsURL != "" {
		supported = append(supported, v2EWS)
	}
	return c.sendJSON(http.StatusBadRequest, v2Error{"InvalidProtocol", invalidProtocolMessage(proto, supported)})
}

// jsonFail answers an error as Exchange's v2 endpoint does.
func (a *autodiscover) jsonFail(c *call, err error) {
	if errors.Is(err, errBadAddress) {
		_ = c.sendJSON(http.StatusBadRequest, v2Error{"InvalidUser", "The e-mail address is missing or not valid."})
		return
	}
	switch c.classify(err) {
	case lookupUnknownDomain, lookupRejected:
		_ = c.sendJSON(http.StatusNotFound, v2Error{"InvalidUser", "The e-mail address cannot be found."})
	case lookupUnavailable:
		c.w.Header().Set("Retry-After", "30")
		_ = c.sendJSON(http.StatusServiceUnavailable, v2Error{"ServerBusy", "The directory is unavailable; try again later."})
	default:
		_ = c.sendJSON(http.StatusInternalServerError, v2Error{"InternalServerError", "Internal server error."})
	}
}

// jsonLogPath hides the address of a /v1.0/{address} path in the access
// log (unless addresses are logged).
func jsonLogPath(p string) string {
	if email, ok := jsonPathEmail(p); ok && email != "" {
		return p[:len(p)-len(email)] + "{address}"
	}
	return p
}

// invalidProtocolMessage is Exchange's message. The given value is quoted
// only when it is a short plain word; anything else is left out rather
// than echoed.
func invalidProtocolMessage(proto string, supported []string) string {
	list := "'" + strings.Join(supported, ",") + "'"
	if isPlainWord(proto, 40) {
		return "The given protocol value '" + proto + "' is invalid. Supported values are " + list
	}
	return "The given protocol value is invalid. Supported values are " + list
}

func isPlainWord(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// sendJSON sends v as application/json. encoding/json escapes <, > and &,
// so nothing in a message can become markup.
func (c *call) sendJSON(status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding a JSON answer: %w", err)
	}
	cache := noStore
	if status == http.StatusOK {
		cache = privateNoCache
	}
	c.send(status, jsonContentType, cache, append(body, '\n'))
	return nil
}
