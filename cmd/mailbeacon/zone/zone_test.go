package zone

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// PACC records appear only for a domain with a document, point where the
// other names point, and carry the hash of the document as served.
func TestRecordsPACC(t *testing.T) {
	ds, err := policy.NewDomains([]policy.DomainConfig{
		{Name: "tls.example", Services: []policy.ServiceConfig{{Type: "imap", Host: "mail.tls.example"}, {Type: "smtp", Host: "mail.tls.example"}}},
		{Name: "starttls.example", Services: []policy.ServiceConfig{{Type: "imap", Host: "mail.starttls.example", Socket: "starttls"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	pacc := func(recs []Record) (names []string) {
		for _, r := range recs {
			if strings.Contains(r.Name, "ua-auto-config") {
				names = append(names, r.Type+" "+r.Name+" "+r.Value)
			}
		}
		return names
	}
	body, ok, err := protocols.RenderPACC(ds["tls.example"])
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	txt := "TXT _ua-auto-config.tls.example. " + strconv.Quote(protocols.PACCRecord(body))
	for _, tc := range []struct {
		name string
		d    string
		t    Target
		want string
	}{
		{"cname", "tls.example", Target{Host: "mb.example.net"}, "CNAME ua-auto-config.tls.example. mb.example.net.|" + txt},
		{"addresses", "tls.example", Target{Addresses: []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")}},
			"A ua-auto-config.tls.example. 192.0.2.1|AAAA ua-auto-config.tls.example. 2001:db8::1|" + txt},
		{"no target: the TXT record only", "tls.example", Target{}, txt},
		{"nothing PACC can say", "starttls.example", Target{Host: "mb.example.net"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(pacc(Records(ds[tc.d], tc.t, 60)), "|"); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
