// Command domainscale is the helper of bench/domains.sh, the scale
// benchmark of directory domains:
//
//	domainscale ldif -domains N -users M          LDIF of N iRedMail-style domains, M users each
//	domainscale raw -url U ... -mode user|domain|both
//	                                              the raw go-ldap search rate of the directory
//	domainscale fill -url U -domains N            ask mailbeacon once for each domain
//
// Domain i is d<i>.example; its users are u<j>@d<i>.example (uid u<j>.d<i>).
// raw and fill print one "RESULT key=value ..." line: raw with the CPU time
// it spent itself (cpu_us, utime + stime), fill with the count of each
// HTTP status. Either exits 1 after it when a search failed or an answer
// was not a 200: such a run measured errors, not work.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-ldap/ldap/v3"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: domainscale ldif|raw|fill [flags]")
	}
	var err error
	switch os.Args[1] {
	case "ldif":
		err = ldifCmd(os.Args[2:])
	case "raw":
		err = rawCmd(os.Args[2:])
	case "fill":
		err = fillCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		log.Fatal("domainscale: ", err)
	}
}

func domainName(i int) string { return fmt.Sprintf("d%d.example", i) }

func ldifCmd(args []string) error {
	fs := flag.NewFlagSet("ldif", flag.ExitOnError)
	domains := fs.Int("domains", 100_000, "domain entries")
	users := fs.Int("users", 10, "users per domain")
	_ = fs.Parse(args)
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	fmt.Fprint(w, `dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=services,dc=example,dc=com
objectClass: organizationalUnit
ou: services

dn: cn=mailbeacon,ou=services,dc=example,dc=com
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: mailbeacon
userPassword: bench-service-password

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: o=domains,dc=example,dc=com
objectClass: organization
o: domains

`)
	for i := range *domains {
		d := domainName(i)
		fmt.Fprintf(w, "dn: domainName=%s,o=domains,dc=example,dc=com\nobjectClass: mailDomain\ndomainName: %s\ncn: Customer %d\naccountStatus: active\nmtaTransport: dovecot\n\n", d, d, i)
		for j := range *users {
			fmt.Fprintf(w, "dn: uid=u%d.%s,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nobjectClass: mailUser\nuid: u%d.%s\ncn: User %d %d\nsn: %d\nmail: u%d@%s\naccountStatus: active\nenabledService: mail\nenabledService: imapsecured\nenabledService: smtpsecured\n\n",
				j, d, j, d, j, i, i, j, d)
		}
	}
	return w.Flush()
}

// rawCmd searches as mailbeacon does, with go-ldap and nothing else, on c
// connections for a duration: mode user (the user filter), domain (the
// domain filter) or both (one of each per iteration, as a request for a
// new domain costs). Values are distinct: user u<j>@d<i> for iteration
// n is j = (offset+n) / domains, i = (offset+n) % domains.
func rawCmd(args []string) error {
	fs := flag.NewFlagSet("raw", flag.ExitOnError)
	url := fs.String("url", "", "ldap:// URL")
	bindDN := fs.String("bind-dn", "cn=mailbeacon,ou=services,dc=example,dc=com", "")
	bindPW := fs.String("bind-password", "bench-service-password", "")
	mode := fs.String("mode", "user", "user, domain or both")
	conns := fs.Int("c", 16, "connections")
	dur := fs.Duration("d", 5*time.Second, "duration")
	domains := fs.Int("domains", 100_000, "domains in the directory")
	offset := fs.Int("offset", 0, "first value")
	userAttrs := fs.String("user-attrs", "accountStatus,cn,displayName,enabledService,mail,uid", "")
	domainAttrs := fs.String("domain-attrs", "accountStatus,cn,disabledService,domainName,mtaTransport", "")
	_ = fs.Parse(args)
	var next atomic.Int64
	next.Store(int64(*offset))
	var done atomic.Int64
	var errs atomic.Int64
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	start := time.Now()
	for range *conns {
		c, err := ldap.DialURL(*url)
		if err != nil {
			return err
		}
		if err := c.Bind(*bindDN, *bindPW); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for time.Now().Before(deadline) {
				n := int(next.Add(1) - 1)
				d, u := domainName(n%*domains), n / *domains
				if *mode != "user" {
					f := fmt.Sprintf("(&(objectClass=mailDomain)(|(domainName=%[1]s)(domainAliasName=%[1]s)))", ldap.EscapeFilter(d))
					if _, err := c.Search(ldap.NewSearchRequest("o=domains,dc=example,dc=com", ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 2, 3, false, f, strings.Split(*domainAttrs, ","), nil)); err != nil {
						errs.Add(1)
					}
				}
				if *mode != "domain" {
					mail := ldap.EscapeFilter(fmt.Sprintf("u%d@%s", u, d))
					f := fmt.Sprintf("(&(objectClass=mailUser)(|(mail=%[1]s)(shadowAddress=%[1]s)))", mail)
					if _, err := c.Search(ldap.NewSearchRequest("dc=example,dc=com", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 2, 3, false, f, strings.Split(*userAttrs, ","), nil)); err != nil {
						errs.Add(1)
					}
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	fmt.Printf("RESULT mode=%s iterations=%d errors=%d seconds=%.2f rate=%.0f cpu_us=%d\n", *mode, done.Load(), errs.Load(), secs, float64(done.Load())/secs, cpuMicros())
	if errs.Load() > 0 {
		return fmt.Errorf("INVALID: %d searches failed", errs.Load())
	}
	return nil
}

// cpuMicros is the CPU time this process has spent, user and system, in
// microseconds.
func cpuMicros() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano()/1000 + ru.Stime.Nano()/1000
}

// fillCmd asks mailbeacon's autoconfig once for u0@ of every domain from
// -from to -domains, on c connections.
func fillCmd(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	base := fs.String("url", "", "mailbeacon's http:// base URL")
	from := fs.Int("from", 0, "first domain")
	domains := fs.Int("domains", 100_000, "domains in the directory")
	conns := fs.Int("c", 16, "connections")
	_ = fs.Parse(args)
	tr := &http.Transport{MaxIdleConnsPerHost: *conns}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next atomic.Int64
	next.Store(int64(*from))
	var bad atomic.Int64
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *domains {
					return
				}
				req, _ := http.NewRequestWithContext(context.Background(), "GET", fmt.Sprintf("%s/mail/config-v1.1.xml?emailaddress=u0@%s", *base, domainName(i)), nil)
				resp, err := client.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	n := *domains - *from
	fmt.Printf("RESULT asked=%d failed=%d seconds=%.2f rate=%.0f statuses=%s\n", n, bad.Load(), secs, float64(n)/secs, statusList(statuses))
	if bad.Load() > 0 || statuses[http.StatusOK] != n {
		return fmt.Errorf("INVALID: %d requests failed, statuses %s, %d asked", bad.Load(), statusList(statuses), n)
	}
	return nil
}

// statusList is "200:n,404:m", in the order of the status codes.
func statusList(m map[int]int) string {
	codes := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%d:%d", c, m[c])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}
