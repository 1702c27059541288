package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check"
	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check/checktest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// deployment is mailbeacon (the demo) behind HTTPS and HTTP test servers
// on loopback, certificates from a test CA, and a DNS server with a zone.
type deployment struct {
	dns       *checktest.DNS
	ca        *checktest.CA
	dialAddr  func(ctx context.Context, network, addr string) (net.Conn, error)
	httpsAddr string
}

// certNames are the names a correct deployment's certificate covers.
var certNames = []string{"autoconfig.example.com", "autodiscover.example.com", "ua-auto-config.example.com", "example.com", "mailbeacon.example.net"}

// demoZone is what `mailbeacon dns example.com --demo` prints, plus the
// addresses of the public host and of the bare domain: 127.0.0.1.
func demoZone(t *testing.T) string {
	t.Helper()
	code, out, errOut := runDNS(t, "example.com", "--demo")
	if code != 0 {
		t.Fatalf("dns: %s", errOut)
	}
	return out + "mailbeacon.example.net. 3600 IN A 127.0.0.1\nexample.com. 3600 IN A 127.0.0.1\n"
}

// newDeployment serves the demo handler, wrapped by wrap if set, with cert
// on HTTPS and plainly on HTTP, and zone in DNS.
func newDeployment(t *testing.T, zone string, cert func(ca *checktest.CA) tls.Certificate, wrap func(http.Handler) http.Handler) *deployment {
	t.Helper()
	h, _ := demoApp(t, demoConfig)
	if wrap != nil {
		h = wrap(h)
	}
	ca := checktest.NewCA(t)
	c := cert(ca)
	tlsSrv := httptest.NewUnstartedServer(h)
	tlsSrv.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &c, nil }}
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused certificates are the point of some cases
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	// The plain-HTTP listener of a server that serves TLS itself.
	httpSrv := httptest.NewUnstartedServer(h)
	httpSrv.Config.BaseContext = func(net.Listener) context.Context { return protocols.OverPlainHTTP(context.Background()) }
	httpSrv.Start()
	t.Cleanup(httpSrv.Close)
	ports := map[string]string{
		"127.0.0.1:443": tlsSrv.Listener.Addr().String(),
		"127.0.0.1:80":  httpSrv.Listener.Addr().String(),
	}
	return &deployment{
		dns: checktest.StartDNS(t, zone),
		ca:  ca,
		// Only the test servers: any other address is refused, so nothing
		// leaves loopback whatever the zone says.
		dialAddr: func(ctx context.Context, network, addr string) (net.Conn, error) {
			real, ok := ports[addr]
			if !ok {
				return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("test: connection to %s refused", addr)}
			}
			var d net.Dialer
			return d.DialContext(ctx, network, real)
		},
		httpsAddr: tlsSrv.Listener.Addr().String(),
	}
}

// check runs `mailbeacon check` against the deployment.
func (d *deployment) check(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"--demo", "--resolver", d.dns.Addr}, args...)
	err := checkWith(context.Background(), args, &out, &errOut, func(o *check.Options) {
		o.DialAddr = d.dialAddr
		o.RootCAs = d.ca.Pool
		o.Timeout = 3 * time.Second
	})
	code := 0
	if err != nil {
		code = 1
		errOut.WriteString(err.Error())
	}
	return code, out.String(), errOut.String()
}

func validCert(ca *checktest.CA) tls.Certificate {
	return ca.Issue(nilT{}, time.Now().Add(90*24*time.Hour), certNames...)
}

// nilT lets certificate helpers run outside a test's goroutine-bound T:
// they fail loudly instead.
type nilT struct{ testing.TB }

func (nilT) Helper()                   {}
func (nilT) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (nilT) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

// failedChecks lists the failing lines of a text report as "check: detail".
var failLine = regexp.MustCompile(`(?m)^  ✘ (.*)$`)

func failures(report string) []string {
	var out []string
	for _, m := range failLine.FindAllStringSubmatch(report, -1) {
		out = append(out, m[1])
	}
	return out
}

// A correct local setup passes every check; each broken one fails with
// the fault named, and only the checks that fault breaks.
func TestCheckDeployment(t *testing.T) {
	withoutLine := func(prefix string) func(string) string {
		return func(z string) string {
			var keep []string
			for _, l := range strings.Split(z, "\n") {
				if !strings.HasPrefix(l, prefix) {
					keep = append(keep, l)
				}
			}
			return strings.Join(keep, "\n")
		}
	}
	htmlAutoconfig := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "config-v1.1.xml") {
				w = typeRewriter{ResponseWriter: w, ctype: "text/html; charset=utf-8"}
			}
			h.ServeHTTP(w, r)
		})
	}
	for _, tc := range []struct {
		name  string
		zone  func(string) string
		cert  func(*checktest.CA) tls.Certificate
		wrap  func(http.Handler) http.Handler
		fails []string // the failing checks, each "check: start of detail"
		fixes []string // text the report's fixes must contain
	}{
		{name: "correct"},
		{
			name: "missing autoconfig record",
			zone: withoutLine("autoconfig.example.com."),
			fails: []string{
				"autoconfig.example.com: no record",
				"1 GET https://autoconfig.example.com/mail/config-v1.1.xml?emailaddress=bob%40example.com: autoconfig.example.com has no A or AAAA record",
			},
			fixes: []string{"fix: add to the example.com zone:", "autoconfig.example.com. 3600 IN CNAME mailbeacon.example.net."},
		},
		{
			name:  "missing _imaps record",
			zone:  withoutLine("_imaps._tcp.example.com."),
			fails: []string{"_imaps._tcp.example.com SRV: no record"},
			fixes: []string{"_imaps._tcp.example.com. 3600 IN SRV 0 1 993 mail.example.com."},
		},
		{
			name: "POP3 without TLS advertised",
			zone: func(z string) string {
				return withoutLine("_pop3._tcp.example.com.")(z) + "_pop3._tcp.example.com. 3600 IN SRV 10 1 110 mail.example.com.\n"
			},
			fails: []string{"_pop3._tcp.example.com SRV: advertises 10 1 110 mail.example.com., which the configuration does not offer"},
			fixes: []string{"_pop3._tcp.example.com. 3600 IN SRV 0 0 0 ."},
		},
		{
			name: "autoconfig CNAME elsewhere",
			zone: func(z string) string {
				return strings.Replace(z, "CNAME mailbeacon.example.net.", "CNAME old.example.net.", 1) + "old.example.net. 3600 IN A 127.0.0.1\n"
			},
			fails: []string{"autoconfig.example.com: CNAME old.example.net., but server.public_host is mailbeacon.example.net"},
		},
		{
			name: "certificate without autodiscover name",
			cert: func(ca *checktest.CA) tls.Certificate {
				return ca.Issue(nilT{}, time.Now().Add(90*24*time.Hour), "autoconfig.example.com", "ua-auto-config.example.com", "example.com", "mailbeacon.example.net")
			},
			fails: []string{
				"autodiscover.example.com: the certificate is for autoconfig.example.com, ua-auto-config.example.com, example.com, mailbeacon.example.net, not autodiscover.example.com",
				"2 POST https://autodiscover.example.com/autodiscover/autodiscover.xml: TLS: the certificate is for",
			},
			fixes: []string{"get a certificate that includes autodiscover.example.com"},
		},
		{
			name: "certificate near expiry",
			cert: func(ca *checktest.CA) tls.Certificate {
				return ca.Issue(nilT{}, time.Now().Add(3*24*time.Hour+time.Hour), certNames...)
			},
			fails: []string{
				"autoconfig.example.com: valid, but expires in 3 days",
				"autodiscover.example.com: valid, but expires in 3 days",
				"ua-auto-config.example.com: valid, but expires in 3 days",
				"example.com: valid, but expires in 3 days",
				"mailbeacon.example.net: valid, but expires in 3 days",
			},
			fixes: []string{"renew it now"},
		},
		{
			name: "wrong content type",
			wrap: htmlAutoconfig,
			fails: []string{
				`1 GET https://autoconfig.example.com/mail/config-v1.1.xml?emailaddress=bob%40example.com: Content-Type "text/html; charset=utf-8"`,
				`2 GET https://example.com/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob%40example.com: Content-Type "text/html`,
				`3 GET http://autoconfig.example.com/mail/config-v1.1.xml?emailaddress=bob%40example.com: Content-Type "text/html`,
				`4 GET http://example.com/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob%40example.com: Content-Type "text/html`,
				"Thunderbird: no URL gives a valid configuration",
			},
			fixes: []string{"serve it as Content-Type: text/xml"},
		},
		{
			// The configuration changed, the DNS record did not: PACC
			// clients discard the document.
			name: "stale PACC record",
			zone: func(z string) string {
				return withoutLine("_ua-auto-config.example.com.")(z) +
					"_ua-auto-config.example.com. 3600 IN TXT \"v=UAAC1; a=sha256; d=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n"
			},
			fails: []string{
				"_ua-auto-config.example.com TXT: has v=UAAC1; a=sha256; d=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=; the configuration says v=UAAC1; a=sha256; d=",
				"_ua-auto-config.example.com TXT: has v=UAAC1; a=sha256; d=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=; the served document hashes to v=UAAC1; a=sha256; d=",
			},
			fixes: []string{"publish the record for the served document:", "_ua-auto-config.example.com. 3600 IN TXT \"v=UAAC1; a=sha256; d="},
		},
		{
			// A proxy (or an old instance) serves other bytes than this
			// configuration's: the published record does not match them.
			name: "PACC body changed on the way",
			wrap: func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/.well-known/user-agent-configuration.json" {
						w.Header().Set("Content-Type", "application/json")
						_, _ = w.Write([]byte("{\"protocols\": {}}\n"))
						return
					}
					h.ServeHTTP(w, r)
				})
			},
			fails: []string{"_ua-auto-config.example.com TXT: has v=UAAC1; a=sha256; d="},
			fixes: []string{"differs from this configuration's document", "reload the running mailbeacon"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			zone := demoZone(t)
			if tc.zone != nil {
				zone = tc.zone(zone)
			}
			cert := validCert
			if tc.cert != nil {
				cert = tc.cert
			}
			d := newDeployment(t, zone, cert, tc.wrap)
			code, out, errOut := d.check(t, "bob@example.com")
			got := failures(out)
			if len(got) != len(tc.fails) {
				t.Errorf("%d failures, want %d:\n%s", len(got), len(tc.fails), out)
			}
			for _, want := range tc.fails {
				if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, want) }) {
					t.Errorf("no failure %q in:\n%s", want, out)
				}
			}
			for _, fix := range tc.fixes {
				if !strings.Contains(out, fix) {
					t.Errorf("report lacks %q:\n%s", fix, out)
				}
			}
			wantCode := 0
			if len(tc.fails) > 0 {
				wantCode = 1
			}
			if code != wantCode {
				t.Errorf("exit %d, want %d (%s)", code, wantCode, errOut)
			}
			if tc.name == "correct" {
				for _, want := range []string{
					"✔ autoconfig.example.com: CNAME mailbeacon.example.net. → 127.0.0.1",
					"✔ 1 GET https://autoconfig.example.com/mail/config-v1.1.xml?emailaddress=bob%40example.com: 200 text/xml: imap mail.example.com:993 SSL, smtp mail.example.com:465 SSL, smtp mail.example.com:587 STARTTLS",
					"✔ Thunderbird: uses URL 1",
					"✔ 3 GET http://autodiscover.example.com/autodiscover/autodiscover.xml: 302 → POST https://autodiscover.example.com/autodiscover/autodiscover.xml: 200",
					"✔ 4 POST https://mailbeacon.example.net/autodiscover/autodiscover.xml: 200",
					"✔ Outlook: uses URL 1",
					"✔ ua-auto-config.example.com: CNAME mailbeacon.example.net. → 127.0.0.1",
					"✔ _ua-auto-config.example.com TXT: v=UAAC1; a=sha256; d=",
					"✔ https://ua-auto-config.example.com/.well-known/user-agent-configuration.json: 200, ",
					"✔ _ua-auto-config.example.com TXT: matches the served document",
				} {
					if !strings.Contains(out, want) {
						t.Errorf("report lacks %q:\n%s", want, out)
					}
				}
			}
		})
	}
}

// typeRewriter replaces the Content-Type a handler sets.
type typeRewriter struct {
	http.ResponseWriter
	ctype string
}

func (w typeRewriter) WriteHeader(code int) {
	w.Header().Set("Content-Type", w.ctype)
	w.ResponseWriter.WriteHeader(code)
}

func (w typeRewriter) Write(b []byte) (int, error) {
	w.Header().Set("Content-Type", w.ctype)
	return w.ResponseWriter.Write(b)
}

func TestCheckJSON(t *testing.T) {
	d := newDeployment(t, withoutRecord(demoZone(t), "_submissions._tcp.example.com."), validCert, nil)
	code, out, _ := d.check(t, "--json", "alice@example.com")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	var rep check.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if rep.Address != "alice@example.com" || rep.Failed != 1 || rep.Passed == 0 {
		t.Errorf("report %+v", rep)
	}
	r := rep.Find("", "_submissions._tcp.example.com SRV")
	if len(r) != 1 || r[0].Status != check.Fail || !strings.Contains(r[0].Fix, "_submissions._tcp.example.com. 3600 IN SRV 0 1 465 mail.example.com.") {
		t.Errorf("result %+v", r)
	}
}

func withoutRecord(zone, prefix string) string {
	var keep []string
	for _, l := range strings.Split(zone, "\n") {
		if !strings.HasPrefix(l, prefix) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func TestCheckUsage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		errHas string
	}{
		{"no address", []string{"check", "--demo"}, 2, "Usage: mailbeacon check"},
		{"bad address", []string{"check", "--demo", "nope"}, 1, "invalid e-mail address"},
		{"unknown domain", []string{"check", "--demo", "a@example.org"}, 1, "example.org is not a configured domain"},
		{"resolver silent", []string{"check", "--demo", "--timeout", "2s", "--resolver", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "a@example.com"}, 1, "the DNS resolver gives no usable answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errOut)
			if code != tc.code || !strings.Contains(errOut.String(), tc.errHas) {
				t.Errorf("exit %d, stderr %q; want %d, %q", code, errOut.String(), tc.code, tc.errHas)
			}
		})
	}
}
