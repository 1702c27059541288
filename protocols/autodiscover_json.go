package protocols

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
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

func (a *autodiscover) json(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(http.MethodGet, http.MethodHead)(w, r)
		return
	}
	raw, _ := jsonPathEmail(r.URL.Path)
	if raw == "" {
		raw = queryValue(r, "Email")
	}
	addr, err := policy.ParseAddress(raw)
	if err != nil {
		writeJSON(w, r, http.StatusBadRequest, v2Error{"InvalidUser", "The e-mail address is missing or not valid."})
		return
	}
	d, err := a.s.res.Domain(r.Context(), addr.Domain)
	if errors.Is(err, policy.ErrDirectoryUnavailable) {
		w.Header().Set("Retry-After", "30")
		writeJSON(w, r, http.StatusServiceUnavailable, v2Error{"ServerBusy", "The directory is unavailable; try again later."})
		return
	}
	if err != nil {
		writeJSON(w, r, http.StatusNotFound, v2Error{"InvalidUser", "The e-mail address cannot be found."})
		return
	}
	proto := queryValue(r, "Protocol")
	switch {
	case strings.EqualFold(proto, v2AutodiscoverV1):
		// Domain data only: no directory search for the most common probe.
		writeJSON(w, r, http.StatusOK, v2Answer{v2AutodiscoverV1, autodiscoverURL(d)})
		return
	case strings.EqualFold(proto, "EWS") && d.EWSURL != "":
		writeJSON(w, r, http.StatusOK, v2Answer{v2EWS, d.EWSURL})
		return
	}
	// The ActiveSync answer and the list of supported values depend on what
	// this user may use. With require_auth no per-user data goes out
	// unauthenticated: the domain's offer stands in for the user's, and the
	// POX mobilesync answer (after the password) tells the truth.
	var easURL string
	if a.opts.RequireAuth {
		for _, s := range d.Services {
			if s.Kind == policy.ActiveSync {
				easURL = s.URL
				break
			}
		}
	} else {
		acct, err := a.s.res.Resolve(r.Context(), addr)
		switch {
		case errors.Is(err, policy.ErrRejected), errors.Is(err, policy.ErrUnknownDomain):
			writeJSON(w, r, http.StatusNotFound, v2Error{"InvalidUser", "The e-mail address cannot be found."})
			return
		case errors.Is(err, policy.ErrDirectoryUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			w.Header().Set("Retry-After", "30")
			writeJSON(w, r, http.StatusServiceUnavailable, v2Error{"ServerBusy", "The directory is unavailable; try again later."})
			return
		case err != nil:
			a.s.log.Error("autodiscover v2: resolve failed", "err", err)
			writeJSON(w, r, http.StatusInternalServerError, v2Error{"InternalServerError", "Internal server error."})
			return
		}
		if s, ok := acct.First(policy.ActiveSync); ok {
			easURL = s.URL
		}
	}
	if strings.EqualFold(proto, v2ActiveSync) && easURL != "" {
		writeJSON(w, r, http.StatusOK, v2Answer{v2ActiveSync, easURL})
		return
	}
	supported := []string{}
	if easURL != "" {
		supported = append(supported, v2ActiveSync)
	}
	supported = append(supported, v2AutodiscoverV1)
	if d.EWSURL != "" {
		supported = append(supported, v2EWS)
	}
	writeJSON(w, r, http.StatusBadRequest, v2Error{"InvalidProtocol", invalidProtocolMessage(proto, supported)})
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

// writeJSON sends v as application/json. encoding/json escapes <, > and &,
// so nothing in a message can become markup.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		textError(w, http.StatusInternalServerError, "internal error")
		return
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusOK {
		h.Set("Cache-Control", "private, no-cache")
	} else {
		h.Set("Cache-Control", "no-store")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
