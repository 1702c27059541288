// Package ldaptest starts a throwaway OpenLDAP slapd for integration tests:
// configuration, TLS certificates, database and sockets all live in the
// test's temporary directory, and the server is killed when the test ends.
//
// It needs OpenLDAP's slapd and slapadd (Debian: apt-get install slapd
// ldap-utils). When they are missing, Slapd skips the test, or fails it
// when the environment variable CI is "true", so that a CI machine without
// them cannot pass silently.
package ldaptest

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
)

//go:embed mailbeacon.schema
var mailbeaconSchema string

// The directory the server holds (with the default demo LDIF).
const (
	BaseDN          = embedded.DemoBaseDN   // dc=example,dc=com
	ServiceDN       = embedded.DemoBindDN   // the account mailbeacon binds as
	ServicePassword = embedded.DemoPassword // its password
	UserPassword    = "Secret123!"          // every demo user's password
	RootDN          = "cn=admin,dc=example,dc=com"
)

// ServiceLDIF is what a base LDIF (WithLDIF) holds besides its suffix
// entry dc=example,dc=com: ou=services with the service account
// (ServiceDN, ServicePassword), and ou=people.
const ServiceLDIF = `dn: ou=services,dc=example,dc=com
objectClass: organizationalUnit
ou: services

dn: cn=mailbeacon,ou=services,dc=example,dc=com
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: mailbeacon
userPassword: ` + ServicePassword + `

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people
`

const (
	startTimeout = 10 * time.Second // slapd start until it answers
	stopTimeout  = 5 * time.Second  // SIGTERM until SIGKILL, and SIGKILL until we give up
)

// Server is a running (or, after Stop, stopped) slapd.
// Stop and Start must be called from the test's goroutine.
type Server struct {
	URL          string // ldap://127.0.0.1:port (StartTLS available)
	LDAPSURL     string // ldaps://127.0.0.1:port
	LDAPIURL     string // ldapi://..., where root (or the test's user) manages cn=config via SASL EXTERNAL
	CAFile       string // PEM file of the CA that signed the server certificate
	Dir          string // the server's directory: slapd.conf, certificates, database, log
	RootPassword string // password of RootDN, which bypasses the ACLs

	t       testing.TB
	slapd   string
	conf    string
	pidFile string
	logFile string

	mu           sync.Mutex
	pid          int // 0 when stopped
	monitorCalls int // reads of the operation counters (monitor.go)

	watchdog *Watchdog
}

// Option changes what Slapd sets up.
type Option func(*options)

type options struct {
	ldif     string
	extra    []string
	referral string
	schemas  []string
	// baseOnly leaves misc.schema and mailbeacon.schema out
	// (WithBaseSchemasOnly).
	baseOnly bool
	suffixes []string // WithSuffix
}

// WithExtraLDIF adds LDIF content records, loaded after the base data (the
// demo directory unless WithLDIF replaces it). Entries must lie under
// dc=example,dc=com (or a WithSuffix naming context) and may use the schema of mailbeacon.schema and of
// core, cosine, inetorgperson, nis and misc.
func WithExtraLDIF(ldif string) Option {
	return func(o *options) { o.extra = append(o.extra, ldif) }
}

// WithSchema adds a schema file's text (slapd.conf syntax: attributetype
// and objectclass statements) after core, cosine, inetorgperson, nis, misc
// and mailbeacon.schema (the last two not with WithBaseSchemasOnly), so
// that LDIF may use a vendor's mail schema. The vendors' test schemas are
// in Schema.
func WithSchema(text string) Option {
	return func(o *options) { o.schemas = append(o.schemas, text) }
}

// WithBaseSchemasOnly leaves misc.schema and mailbeacon.schema out: the
// server loads core, cosine, inetorgperson and nis, then the WithSchema
// files. It is for a vendor schema that gives one of their names or OIDs
// a definition of its own, as directories built for that vendor do:
// qmail-ldap's accountStatus and mailHost, postfix-book's mailEnabled, 389
// Directory Server's mailAlternateAddress (misc.schema's mailLocalAddress
// OID). The data must then use neither: give it with WithLDIF.
func WithBaseSchemasOnly() Option {
	return func(o *options) { o.baseOnly = true }
}

// WithLDIF replaces the demo directory as the base data. It must create
// dc=example,dc=com itself.
func WithLDIF(ldif string) Option {
	return func(o *options) { o.ldif = ldif }
}

// WithReferral makes url the server's default referral: a request for a
// DN outside dc=example,dc=com is answered with LDAP result 10 (referral)
// naming url, as Active Directory answers a DN of another domain.
func WithReferral(url string) Option {
	return func(o *options) { o.referral = url }
}

// Slapd starts a throwaway slapd loaded with the demo directory (see
// embedded.DemoLDIF) on free 127.0.0.1 ports, waits until it answers, and
// stops it when the test ends. The ACL lets the service account (ServiceDN)
// and each entry itself read entries; others may only bind.
func Slapd(t testing.TB, opts ...Option) *Server {
	t.Helper()
	if !supported {
		t.Skip("ldaptest: a throwaway slapd needs a Unix system")
	}
	o := options{ldif: embedded.DemoLDIF()}
	for _, opt := range opts {
		opt(&o)
	}
	ol, err := findOpenLDAP()
	if err != nil {
		msg := fmt.Sprintf("ldaptest: %v: install OpenLDAP's server and tools, e.g. apt-get install slapd ldap-utils", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	dir := t.TempDir()
	if strings.ContainsAny(dir, "\"\\\n") {
		t.Fatalf("ldaptest: temp dir %q has characters slapd.conf cannot quote", dir)
	}
	s := &Server{
		Dir:          dir,
		RootPassword: randomHex(12),
		t:            t,
		slapd:        ol.slapd,
		conf:         filepath.Join(dir, "slapd.conf"),
		pidFile:      filepath.Join(dir, "slapd.pid"),
		logFile:      filepath.Join(dir, "slapd.log"),
	}
	ca, cert, key, err := writeCerts(dir)
	if err != nil {
		t.Fatalf("ldaptest: certificates: %v", err)
	}
	s.CAFile = ca

	// A unix socket path is limited to ~104 bytes; long temp dirs get a
	// short socket directory of their own.
	sock := filepath.Join(dir, "ldapi")
	if len(sock) > 100 {
		sdir, err := os.MkdirTemp("", "ldapi")
		if err != nil {
			t.Fatalf("ldaptest: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(sdir) }) // runs after the slapd is stopped
		sock = filepath.Join(sdir, "s")
	}
	s.LDAPIURL = "ldapi://" + url.PathEscape(sock)

	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mailbeacon.schema"), []byte(mailbeaconSchema), 0o644); err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	var extraSchemas []string
	for i, text := range o.schemas {
		f := filepath.Join(dir, fmt.Sprintf("extra%d.schema", i))
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Fatalf("ldaptest: %v", err)
		}
		extraSchemas = append(extraSchemas, f)
	}
	conf := s.config(ol, ca, cert, key, o.referral, !o.baseOnly, extraSchemas)
	more, err := suffixDatabases(dir, o.suffixes)
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	conf += more
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	data, bySuffix := splitLDIF(strings.Join(append([]string{o.ldif}, o.extra...), "\n\n"), o.suffixes)
	for i, d := range append([]string{data}, bySuffix...) {
		ldifFile := filepath.Join(dir, fmt.Sprintf("data%d.ldif", i))
		if err := os.WriteFile(ldifFile, []byte(d+"\n"), 0o600); err != nil {
			t.Fatalf("ldaptest: %v", err)
		}
		args := []string{"-q", "-f", s.conf, "-l", ldifFile}
		if i > 0 {
			args = append(args, "-b", o.suffixes[i-1])
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, ol.slapadd, args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("ldaptest: slapadd: %v\n%s", err, out)
		}
	}

	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(s.cleanup)
	s.startWatchdog()

	// The ports are picked free but released before slapd takes them: on
	// the rare clash with another process, try new ones.
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			t.Fatalf("ldaptest: %v", err)
		}
		s.URL = "ldap://127.0.0.1:" + strconv.Itoa(ports[0])
		s.LDAPSURL = "ldaps://127.0.0.1:" + strconv.Itoa(ports[1])
		s.mu.Lock()
		err = s.start()
		s.mu.Unlock()
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatalf("ldaptest: %v", err)
		}
		t.Logf("ldaptest: %v; retrying on other ports", err)
	}
}

// Stop kills the server (SIGTERM, then SIGKILL): clients see an outage.
// The data stays; Start brings the server back. Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stop(); err != nil {
		s.t.Fatalf("ldaptest: %v", err)
	}
}

// Start starts a stopped server again, on the same ports and data, and
// waits until it answers. Starting a running server does nothing.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pid != 0 && alive(s.pid) {
		return
	}
	if err := s.start(); err != nil {
		s.t.Fatalf("ldaptest: %v", err)
	}
}

// PID returns the process id of the running slapd, 0 when stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

type openLDAP struct {
	slapd, slapadd string
	schemaDir      string
	moduleDir      string // "" when back_mdb is built in
}

func findOpenLDAP() (openLDAP, error) {
	var ol openLDAP
	var missing []string
	for _, p := range []struct {
		name string
		dst  *string
	}{{"slapd", &ol.slapd}, {"slapadd", &ol.slapadd}} {
		*p.dst = findProgram(p.name)
		if *p.dst == "" {
			missing = append(missing, p.name)
		}
	}
	if len(missing) > 0 {
		return ol, fmt.Errorf("%s not found in PATH or /usr/sbin", strings.Join(missing, " and "))
	}
	for _, d := range []string{"/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema"} {
		if fileExists(filepath.Join(d, "core.schema")) && fileExists(filepath.Join(d, "misc.schema")) {
			ol.schemaDir = d
			break
		}
	}
	if ol.schemaDir == "" {
		return ol, errors.New("OpenLDAP's schema files (core.schema, misc.schema) not found in /etc/ldap/schema or /etc/openldap/schema")
	}
	for _, d := range []string{"/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap", "/usr/libexec/openldap", "/usr/local/libexec/openldap"} {
		if fileExists(filepath.Join(d, "back_mdb.la")) || fileExists(filepath.Join(d, "back_mdb.so")) {
			ol.moduleDir = d
			break
		}
	}
	return ol, nil
}

func findProgram(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (s *Server) config(ol openLDAP, ca, cert, key, referral string, ours bool, extraSchemas []string) string {
	q := func(p string) string { return `"` + p + `"` }
	var b strings.Builder
	for _, f := range []string{"core", "cosine", "inetorgperson", "nis"} {
		fmt.Fprintf(&b, "include %s\n", q(filepath.Join(ol.schemaDir, f+".schema")))
	}
	// Indexed attributes must be defined: mailbeacon.schema's only with it.
	index := "objectClass,uid,mail"
	if ours {
		fmt.Fprintf(&b, "include %s\n", q(filepath.Join(ol.schemaDir, "misc.schema")))
		fmt.Fprintf(&b, "include %s\n", q(filepath.Join(s.Dir, "mailbeacon.schema")))
		index += ",shadowAddress,accountStatus,enabledService,domainName,domainAliasName"
	}
	for _, f := range extraSchemas {
		fmt.Fprintf(&b, "include %s\n", q(f))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "pidfile %s\nargsfile %s\n", q(s.pidFile), q(filepath.Join(s.Dir, "slapd.args")))
	if ol.moduleDir != "" {
		fmt.Fprintf(&b, "modulepath %s\nmoduleload back_mdb\n", q(ol.moduleDir))
	}
	b.WriteString("loglevel none\n")
	if referral != "" {
		fmt.Fprintf(&b, "referral %s\n", q(referral))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "TLSCACertificateFile %s\nTLSCertificateFile %s\nTLSCertificateKeyFile %s\n\n", q(ca), q(cert), q(key))

	// cn=config over ldapi:// with SASL EXTERNAL, for root and for the
	// user running the tests: lets a test change the configuration live.
	b.WriteString("database config\naccess to *\n")
	ids := [][2]int{{0, 0}}
	if uid, gid := os.Getuid(), os.Getgid(); uid > 0 {
		ids = append(ids, [2]int{gid, uid})
	}
	for _, id := range ids {
		fmt.Fprintf(&b, "    by dn.exact=\"gidNumber=%d+uidNumber=%d,cn=peercred,cn=external,cn=auth\" manage\n", id[0], id[1])
	}
	b.WriteString("    by * none\n\n")

	fmt.Fprintf(&b, `database mdb
maxsize 104857600
suffix %q
rootdn %q
rootpw %s
directory %s
index %s eq
access to attrs=userPassword
    by anonymous auth
    by self write
    by * none
access to *
    by dn.exact=%q read
    by self read
    by * none

database monitor
access to *
    by dn.exact=%q read
    by * none
`, BaseDN, RootDN, ssha(s.RootPassword), q(filepath.Join(s.Dir, "db")), index, ServiceDN, RootDN)
	return b.String()
}

// ssha hashes a password the way slappasswd does by default.
func ssha(pw string) string {
	salt := make([]byte, 8)
	_, _ = rand.Read(salt)
	h := sha1.Sum(append([]byte(pw), salt...))
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h[:], salt...))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("no free port: %w", err)
		}
		defer l.Close() // held until all are picked, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// start runs slapd, which daemonizes and writes its pidfile, and waits
// until it answers. On failure nothing is left running. s.mu is held.
func (s *Server) start() error {
	_ = os.Remove(s.pidFile)
	s.monitorCalls = 0 // a new process counts from zero
	logf, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	// No -d: slapd forks, the parent exits once the daemon is set up, and
	// the daemon runs on its own; it works the same as root in a container.
	urls := s.URL + "/ " + s.LDAPSURL + "/ " + s.LDAPIURL
	cmd := exec.CommandContext(ctx, s.slapd, "-f", s.conf, "-h", urls)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	logf.Close()
	if err != nil {
		// Without -d, slapd reports most start-up errors (such as a port
		// in use) only to syslog: say how to see them.
		_ = s.stop()
		return fmt.Errorf("slapd %s: %v (to see why: %s -d 1 -f %s -h %q)%s", s.URL, err, s.slapd, s.conf, urls, s.logTail())
	}
	for {
		if s.pid == 0 {
			s.pid = s.readPid()
		}
		if s.pid != 0 && !alive(s.pid) {
			s.pid = 0
			_ = os.Remove(s.pidFile)
			return fmt.Errorf("slapd %s exited right after starting%s", s.URL, s.logTail())
		}
		if s.pid != 0 && s.answers() {
			return nil
		}
		if ctx.Err() != nil {
			_ = s.stop()
			return fmt.Errorf("slapd %s did not answer within %v%s", s.URL, startTimeout, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answers reports whether the LDAP port serves the root DSE and the LDAPS
// port accepts connections.
func (s *Server) answers() bool {
	c, err := ldap.DialURL(s.URL, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetTimeout(time.Second)
	if _, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"namingContexts"}, nil)); err != nil {
		return false
	}
	nc, err := net.DialTimeout("tcp", strings.TrimPrefix(s.LDAPSURL, "ldaps://"), time.Second)
	if err != nil {
		return false
	}
	nc.Close()
	return true
}

func (s *Server) readPid() int {
	b, err := os.ReadFile(s.pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !ours(pid, s.conf) {
		return 0
	}
	return pid
}

// stop kills the slapd (SIGTERM, then SIGKILL) and waits until it is gone.
// s.mu is held.
func (s *Server) stop() error {
	pid := s.pid
	if pid == 0 {
		pid = s.readPid() // a start that failed half-way
	}
	if pid == 0 {
		return nil
	}
	if alive(pid) && ours(pid, s.conf) {
		_ = terminate(pid)
		if !waitDead(pid, stopTimeout) {
			s.t.Logf("ldaptest: slapd pid %d ignored SIGTERM for %v; sending SIGKILL", pid, stopTimeout)
			_ = kill(pid)
			if !waitDead(pid, stopTimeout) {
				return fmt.Errorf("slapd pid %d survived SIGKILL", pid)
			}
		}
	}
	s.pid = 0
	_ = os.Remove(s.pidFile)
	return nil
}

func waitDead(pid int, d time.Duration) bool {
	for deadline := time.Now().Add(d); ; {
		if !alive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logFile)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return ""
	}
	return "\nslapd said:\n" + string(b)
}

func (s *Server) cleanup() {
	s.mu.Lock()
	err := s.stop()
	s.mu.Unlock()
	if err != nil {
		s.t.Errorf("ldaptest: %v", err)
	}
	s.stopWatchdog()
}

// watchdogScript kills the slapd when its standard input reaches EOF,
// which happens when the test process exits by any means, including
// ones that skip t.Cleanup (a test timeout's panic, SIGKILL, Ctrl-C).
// $1 is the pidfile, $2 the configuration path slapd must be running with.
const watchdogScript = `read -r _ || :
pid=$(cat "$1" 2>/dev/null) || exit 0
case "$pid" in ''|*[!0-9]*) exit 0 ;; esac
if [ -r "/proc/$pid/cmdline" ] && ! tr '\000' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$2"; then exit 0; fi
kill "$pid" 2>/dev/null || exit 0
for i in 1 2 3 4 5; do kill -0 "$pid" 2>/dev/null || exit 0; sleep 1; done
kill -9 "$pid" 2>/dev/null
exit 0
`

func (s *Server) startWatchdog() {
	wd, err := StartWatchdog(watchdogScript, "ldaptest-watchdog", nil, s.pidFile, s.conf)
	if err != nil {
		s.t.Logf("ldaptest: no watchdog: %v", err)
	}
	s.watchdog = wd
}

// stopWatchdog lets the watchdog go once the slapd is stopped and its
// pidfile removed: on EOF it finds nothing to kill and exits.
func (s *Server) stopWatchdog() {
	s.watchdog.Stop(stopTimeout)
	s.watchdog = nil
}
