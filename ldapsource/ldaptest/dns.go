package ldaptest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// DNS is a DNS server on 127.0.0.1 (UDP, a free port) that answers from
// the records the test gives it, for tests of directory servers found
// through SRV records. A name it holds no record of is NXDOMAIN; a name
// with records of other types only answers NOERROR with no record. It
// stops when the test ends.
type DNS struct {
	Addr string // 127.0.0.1:port, for ldap.dns_server

	mu      sync.Mutex
	records []dns.RR
	hang    atomic.Bool
	queries atomic.Int64
}

// NewDNS starts a DNS server holding records, each in zone-file syntax
// with an absolute name, e.g.
// "_ldap._tcp.dc._msdcs.example.test. 60 IN SRV 0 100 389 dc1.example.test.".
func NewDNS(t testing.TB, records ...string) *DNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ldaptest: DNS: %v", err)
	}
	d := &DNS{Addr: pc.LocalAddr().String()}
	d.Set(t, records...)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.answer)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return d
}

// Set replaces the records the server answers from.
func (d *DNS) Set(t testing.TB, records ...string) {
	t.Helper()
	rrs := make([]dns.RR, 0, len(records))
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil || rr == nil {
			t.Fatalf("ldaptest: DNS record %q: %v", r, err)
		}
		rrs = append(rrs, rr)
	}
	d.mu.Lock()
	d.records = rrs
	d.mu.Unlock()
}

// Hang makes the server read queries and answer none (on), or answer
// again (off).
func (d *DNS) Hang(on bool) { d.hang.Store(on) }

// Queries returns how many queries the server received.
func (d *DNS) Queries() int { return int(d.queries.Load()) }

func (d *DNS) answer(w dns.ResponseWriter, q *dns.Msg) {
	d.queries.Add(1)
	if d.hang.Load() || len(q.Question) != 1 {
		return
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	qn := q.Question[0]
	known := false
	d.mu.Lock()
	for _, rr := range d.records {
		h := rr.Header()
		if !strings.EqualFold(h.Name, qn.Name) {
			continue
		}
		known = true
		if h.Rrtype == qn.Qtype {
			m.Answer = append(m.Answer, dns.Copy(rr))
		}
	}
	d.mu.Unlock()
	if !known {
		m.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(m)
}
