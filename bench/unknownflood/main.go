// Command unknownflood shows that distinct unknown addresses, however many
// arrive, keep the process's memory bounded: it asks the autoconfig
// handler (per-client limits off, as when an attacker has many source
// addresses) for N addresses a directory does not know, and prints the
// cache's size, the live heap and the resident size at every tenth of the
// way. It exits 1 if the cache ever holds more than cache.max_entries.
//
//	go run ./bench/unknownflood -addresses 1000000 -max-entries 100000
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/mailbeacon/mailbeacon/bench/internal/benchkit"
	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// directory knows nobody.
type directory struct{}

func (directory) Lookup(context.Context, ldapsource.Query) (*ldapsource.Entry, error) {
	return nil, ldapsource.ErrNotFound
}

func main() {
	n := flag.Int("addresses", 1_000_000, "distinct unknown addresses to ask for")
	maxEntries := flag.Int("max-entries", 0, "cache.max_entries (0: the default)")
	flag.Parse()
	log.SetFlags(0)

	cfg := policy.DefaultCacheConfig()
	if *maxEntries > 0 {
		cfg.MaxEntries = *maxEntries
	}
	res := benchkit.Resolver(directory{}, cfg)
	h := protocols.NewHandler(res, protocols.Options{})

	mb := func(b uint64) string { return fmt.Sprintf("%6.1f MB", float64(b)/1e6) }
	fmt.Printf("%d distinct unknown addresses, cache.max_entries %d (%s)\n", *n, cfg.MaxEntries, runtime.Version())
	fmt.Printf("%10s %10s %10s %10s %8s\n", "asked", "cached", "live heap", "resident", "elapsed")
	start := time.Now()
	report := func(i int) {
		u := benchkit.Settle()
		fmt.Printf("%10d %10d %s %s %8s\n", i, res.CachedEntries(), mb(u.Heap), mb(u.RSS), time.Since(start).Round(time.Millisecond))
		if res.CachedEntries() > cfg.MaxEntries {
			fmt.Printf("FAIL: the cache holds %d entries, over cache.max_entries %d\n", res.CachedEntries(), cfg.MaxEntries)
			os.Exit(1)
		}
	}
	report(0)
	step := max(*n/10, 1)
	for i := range *n {
		addr := "nobody" + strconv.Itoa(i) + "@example.com"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mail/config-v1.1.xml?emailaddress="+addr, nil))
		if rec.Code != http.StatusOK {
			log.Fatalf("%s: HTTP %d", addr, rec.Code)
		}
		if (i+1)%step == 0 {
			report(i + 1)
		}
	}
	runtime.KeepAlive(h)
}
