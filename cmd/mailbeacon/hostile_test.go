package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The rows of the hostile-input table that need a real
// listener: slow-loris headers and bodies, silent connections, oversized
// request lines and headers, against `mailbeacon serve` with short server
// timeouts. protocols/hostile_test.go holds the rows a handler can answer.
// Each row asserts what the client sees (an answer or a closed
// connection); how long the server took is logged, not asserted.
func TestHostileConnections(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, demoConfig+`
server:
  read_header_timeout: 500ms
  read_timeout: 1s
  write_timeout: 2s
  idle_timeout: 2s
operations:
  listen: 127.0.0.1:0
`)
	s := startServe(t, []string{"--demo", "--config", cfgFile, "--listen", "127.0.0.1:0"})
	u, err := url.Parse(s.addrs["server.listen"])
	if err != nil {
		t.Fatal(err)
	}
	pox := adXMLBody("bob@example.com")

	for _, tc := range []struct {
		name string
		// send writes the request; it may trickle and should stop when
		// a write fails.
		send func(c net.Conn)
		// want: "closed" (no answer, connection closed) or an HTTP status
		// line prefix such as "HTTP/1.1 431"; alternatives separated by |.
		want string
	}{
		{"slow-loris headers", func(c net.Conn) {
			fmt.Fprint(c, "GET /mail/config-v1.1.xml?emailaddress=bob@example.com HTTP/1.1\r\nHost: x\r\n")
			for i := 0; i < 100; i++ {
				if _, err := fmt.Fprintf(c, "X-%d: y\r\n", i); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}, "closed"},
		{"slow-loris request line", func(c net.Conn) {
			for _, b := range []byte("GET /mail/config-v1.1.xml?emailaddress=bob@example.com HTTP/1.1\r\n") {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}, "closed|HTTP/1.1 400"},
		{"silent connection", func(net.Conn) {}, "closed"},
		{"slow body", func(c net.Conn) {
			fmt.Fprintf(c, "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n", len(pox))
			for i := 0; i < len(pox); i++ {
				if _, err := c.Write([]byte{pox[i]}); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}, "HTTP/1.1 408"},
		{"body never sent", func(c net.Conn) {
			fmt.Fprint(c, "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n")
		}, "HTTP/1.1 408"},
		{"oversized header", func(c net.Conn) {
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 64<<10))
		}, "HTTP/1.1 431"},
		{"100 KB request line", func(c net.Conn) {
			fmt.Fprintf(c, "GET /mail/config-v1.1.xml?emailaddress=%s@example.com HTTP/1.1\r\nHost: x\r\n\r\n", strings.Repeat("a", 100<<10))
		}, "HTTP/1.1 431"},
		{"10,000 headers", func(c net.Conn) {
			fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n")
			fmt.Fprint(c, strings.Repeat("A: b\r\n", 10000))
			fmt.Fprint(c, "\r\n")
		}, "HTTP/1.1 431"},
		{"huge declared body", func(c net.Conn) {
			fmt.Fprint(c, "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n<Autodiscover>")
		}, "HTTP/1.1 413"},
		{"garbage", func(c net.Conn) {
			fmt.Fprint(c, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP at all\r\n\r\n")
		}, "HTTP/1.1 400"},
		{"well-behaved request (control)", func(c net.Conn) {
			fmt.Fprint(c, "GET /mail/config-v1.1.xml?emailaddress=bob@example.com HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		}, "HTTP/1.1 200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The test's own bound: well past every server timeout.
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			start := time.Now()
			go tc.send(c)
			line, err := bufio.NewReader(c).ReadString('\n')
			took := time.Since(start)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the server kept the connection open for %v: %q", took, line)
			}
			got := strings.TrimSpace(line)
			if got == "" {
				got = "closed"
			}
			t.Logf("%s after %v", got, took.Round(time.Millisecond))
			ok := false
			for _, w := range strings.Split(tc.want, "|") {
				ok = ok || strings.HasPrefix(got, w)
			}
			if !ok {
				t.Errorf("got %q (%v); want %s", got, err, tc.want)
			}
			if got == "closed" {
				// Nothing more comes: the connection is closed.
				if n, _ := io.Copy(io.Discard, c); n > 0 {
					t.Errorf("%d more bytes after the close", n)
				}
			}
		})
	}
}

func adXMLBody(addr string) string {
	return `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>` +
		addr + `</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
}
