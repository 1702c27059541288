package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve puts server.listen and server.http_listen under one connection
// bound (limits.max_connections), with a client's share of it (1/16) and
// the connections waiting longest closed to make room. Idle keep-alive
// connections from 16 addresses, spread over both listeners, fill a bound
// of 16; another address is still answered, on either listener.
func TestDescriptorBoundServe(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, file, demoConfig+`
server:
  listen: 127.0.0.1:0
  http_listen: 127.0.0.1:0
limits:
  max_connections: 16
`)
	s := startServe(t, []string{"--demo", "--config", file}, "server.http_listen")
	if log := s.stderr.String(); !strings.Contains(log, "max_connections=16 per_client=1 per_ipv6_48=4") {
		t.Fatalf("serve did not log its bounds: %s", log)
	}
	addrs := []string{strings.TrimPrefix(s.addrs["server.listen"], "http://"), strings.TrimPrefix(s.addrs["server.http_listen"], "http://")}
	// ask sends a keep-alive request from src and leaves the connection
	// open; err when it was closed instead.
	ask := func(src, addr string) (time.Duration, error) {
		t.Helper()
		t0 := time.Now()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /setup.css HTTP/1.1\r\nHost: example.com\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: %s", src, resp.Status)
		}
		return time.Since(t0), nil
	}
	for i := range 16 {
		if _, err := ask(net.IPv4(127, 0, 0, byte(2+i)).String(), addrs[i%2]); err != nil {
			t.Fatalf("connection %d within the bound: %v", i+1, err)
		}
	}
	if _, err := ask("127.0.0.2", addrs[1]); err == nil {
		t.Error("a client's second connection, over its share of 1 across both listeners, was served")
	}
	for i, addr := range addrs {
		took, err := ask(net.IPv4(127, 0, 1, byte(1+i)).String(), addr)
		if err != nil {
			t.Fatalf("another address, the bound full of idle connections: %v", err)
		}
		t.Logf("listener %d: another address answered in %v with the bound full", i, took.Round(time.Microsecond))
	}
}
