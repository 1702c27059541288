// Command cachemem measures the memory that cached accounts take: it fills
// a policy.Resolver (the demo policy and domain) with N accounts from a
// directory that makes an entry for any address, as a real one would
// return it, and prints the process's resident size before and after, and
// again after every account was answered once over the autoconfig handler
// (whose table of rendered answers is bounded).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"

	"github.com/mailbeacon/mailbeacon/bench/internal/benchkit"
	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// directory answers every address with an enabled iRedMail-style entry.
type directory struct{}

func (directory) Lookup(_ context.Context, q ldapsource.Query) (*ldapsource.Entry, error) {
	uid := q.Local
	return &ldapsource.Entry{
		DN: "uid=" + uid + ",ou=people,dc=example,dc=com",
		Attributes: map[string][]string{
			"uid":            {uid},
			"mail":           {q.Email},
			"displayname":    {"User " + strings.ToUpper(uid)},
			"cn":             {"User " + uid},
			"accountstatus":  {"active"},
			"enabledservice": {"mail", "imap", "imapsecured", "pop3", "pop3secured", "smtp", "smtpsecured", "activesync"},
		},
	}, nil
}

func main() {
	n := flag.Int("accounts", 100_000, "number of cached accounts")
	flag.Parse()
	log.SetFlags(0)

	res := benchkit.Resolver(directory{}, policy.DefaultCacheConfig())
	h := protocols.NewHandler(res, protocols.Options{})
	addr := func(i int) string { return "user" + strconv.Itoa(i) + "@example.com" }

	before := benchkit.Settle()
	ctx := context.Background()
	for i := range *n {
		a, err := policy.ParseAddress(addr(i))
		if err != nil {
			log.Fatal(err)
		}
		acct, err := res.Resolve(ctx, a)
		if err != nil || !acct.Known {
			log.Fatalf("%s: %v", a, err)
		}
	}
	filled := benchkit.Settle()
	for i := range *n {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mail/config-v1.1.xml?emailaddress="+addr(i), nil))
		if rec.Code != http.StatusOK {
			log.Fatalf("%s: HTTP %d", addr(i), rec.Code)
		}
	}
	answered := benchkit.Settle()
	runtime.KeepAlive(res)
	runtime.KeepAlive(h)

	mb := func(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
	fmt.Printf("cached accounts: %d (%s)\n", *n, runtime.Version())
	fmt.Printf("  resident before:                 %s\n", mb(before.RSS))
	fmt.Printf("  resident with %d cached:     %s  (heap in use %s; %.0f bytes per account)\n",
		*n, mb(filled.RSS), mb(filled.Heap), float64(filled.RSS-before.RSS)/float64(*n))
	fmt.Printf("  after one autoconfig answer each: %s  (heap in use %s; rendered answers are kept for at most 4,096 accounts)\n",
		mb(answered.RSS), mb(answered.Heap))
}
