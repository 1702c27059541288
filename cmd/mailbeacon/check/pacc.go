package check

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// PACC (protocols/CLIENTS.md §7): a client fetches the document from
// ua-auto-config.<d> and discards it unless its SHA-256 is the one the
// _ua-auto-config TXT record publishes. Both must change together, so the
// check compares what is served with what is published.

const secPACC = "PACC: the document and the DNS record that pins it"

func paccTXTName(d *policy.Domain) string { return "_" + d.PACCHost() + "." }

func (c *checker) checkPACC(ctx context.Context) {
	want, ok, err := protocols.RenderPACC(c.d)
	if err != nil || !ok {
		c.add(secPACC, "document", Skip, "the configuration offers nothing PACC can express (implicit TLS on 993/995/465, DAV on https)", "")
		return
	}
	u := "https://" + c.d.PACCHost() + protocols.PACCPath
	check := u
	a, err := c.fetch(ctx, http.MethodGet, u, nil, nil, false)
	switch {
	case err != nil:
		c.add(secPACC, check, Fail, err.Error(), "serve it on "+c.d.PACCHost()+": its name must lead to mailbeacon (the record `mailbeacon dns` prints) with a certificate for it")
		return
	case a.status != http.StatusOK:
		c.add(secPACC, check, Fail, "HTTP "+strconv.Itoa(a.status), "mailbeacon answers this path on "+c.d.PACCHost()+": is a proxy or another server answering it?")
		return
	case mediaType(a.ctype) != "application/json":
		c.add(secPACC, check, Fail, "Content-Type "+strconv.Quote(a.ctype)+", not application/json", "serve it as application/json (a proxy that rewrites types?)")
		return
	}
	served := protocols.PACCRecord(a.body)
	detail := "200, " + strconv.Itoa(len(a.body)) + " bytes, " + served
	if !bytes.Equal(a.body, want) {
		// Not fatal by itself: the TXT record below decides what clients
		// accept. But this configuration is not what is running.
		c.add(secPACC, check, Warn, detail+"; differs from this configuration's document ("+protocols.PACCRecord(want)+")",
			"reload the running mailbeacon with this configuration (SIGHUP), then publish the record `mailbeacon dns "+c.d.Name+"` prints")
	} else {
		c.add(secPACC, check, OK, detail, "")
	}
	name := strings.TrimSuffix(paccTXTName(c.d), ".")
	txts, err := c.dns.txt(ctx, name)
	if err != nil && !errors.Is(err, errNoRecord) {
		c.add(secPACC, name+" TXT", Fail, err.Error(), "")
		return
	}
	var published []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=UAAC1") {
			published = append(published, t)
		}
	}
	fix := "publish the record for the served document:\n" + paccTXTName(c.d) + " " + strconv.FormatUint(uint64(c.o.TTL), 10) + " IN TXT " + strconv.Quote(served)
	switch {
	case len(published) == 0:
		c.add(secPACC, name+" TXT", Fail, "no v=UAAC1 record: clients discard the document", fix)
	case !samePACCRecord(published, served):
		c.add(secPACC, name+" TXT", Fail, "has "+strings.Join(published, ", ")+"; the served document hashes to "+served+": clients discard it", fix)
	default:
		c.add(secPACC, name+" TXT", OK, "matches the served document", "")
	}
}

// samePACCRecord reports whether one of the published records vouches for
// the served one: same tags, whatever the spacing.
func samePACCRecord(published []string, served string) bool {
	norm := func(s string) string {
		var parts []string
		for _, p := range strings.Split(s, ";") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		return strings.Join(parts, ";")
	}
	for _, p := range published {
		if norm(p) == norm(served) {
			return true
		}
	}
	return false
}
