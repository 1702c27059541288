// Package benchkit holds what the memory benchmarks share: the demo
// policy and domain, and one way to read the process's memory (after a
// collection, with freed memory returned to the system).
package benchkit

import (
	"log"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Resolver returns a resolver over dir with the demo policy (iredmail,
// login {uid}, mailHost) and the demo domain example.com, or exits.
func Resolver(dir policy.Directory, cache policy.CacheConfig) *policy.Resolver {
	pol, err := policy.New(policy.Config{Preset: "iredmail", Login: "{uid}", HostAttribute: "mailHost"})
	if err != nil {
		log.Fatal(err)
	}
	domains, err := policy.NewDomains([]policy.DomainConfig{{
		Name: "example.com", Provider: "Example Mail", ShortName: "Example",
		Services: []policy.ServiceConfig{
			{Type: "imap", Host: "mail.example.com", Port: 993, Socket: "tls"},
			{Type: "pop3", Host: "mail.example.com", Port: 995, Socket: "tls"},
			{Type: "smtp", Host: "mail.example.com", Port: 465, Socket: "tls"},
			{Type: "smtp", Host: "mail.example.com", Port: 587, Socket: "starttls"},
			{Type: "activesync", URL: "https://mail.example.com/Microsoft-Server-ActiveSync"},
		},
	}})
	if err != nil {
		log.Fatal(err)
	}
	res, err := policy.NewResolver(dir, pol, domains, cache, nil, nil)
	if err != nil {
		log.Fatal(err)
	}
	return res
}

// Usage is the resident size and the heap in use, in bytes.
type Usage struct{ RSS, Heap uint64 }

// Settle collects garbage, returns freed memory to the system and reads
// the resident size from /proc (0 where there is none).
func Settle() Usage {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return Usage{RSS: residentBytes(), Heap: ms.HeapInuse}
}

func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
