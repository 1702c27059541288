//go:build linux

package sambatest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

//go:embed seed.py
var seedScript []byte

// templateVersion changes whenever the making of the template changes
// without seed.py changing; the template's key covers both and Samba's
// version.
const templateVersion = "2"

const (
	netPrefix    = "10.213."        // each DC gets 10.213.N.0/24, N in 1..250
	maxRuntime   = 15 * time.Minute // samba --maximum-runtime: the last safety net
	provisionMax = 3 * time.Minute  // provisioning and seeding the template
	readyMax     = 30 * time.Second // samba start until LDAP and LDAPS answer
	stopWait     = 10 * time.Second // SIGTERM until SIGKILL
	lockName     = "mailbeacon-sambatest.lock"
	tmplPrefix   = "mailbeacon-sambatest-"
	dcTempPrefix = "mailbeacon-dc-"
)

type tools struct {
	samba, sambaTool, ip, python string
	version                      string
}

var (
	toolsOnce sync.Once
	toolsVal  tools
	toolsErr  error
)

// findTools checks, once per process, that everything a DC needs is there.
func findTools() (tools, error) {
	toolsOnce.Do(func() {
		var t tools
		var missing []string
		if os.Geteuid() != 0 {
			toolsErr = errors.New("a DC in a network namespace needs root")
			return
		}
		for _, p := range []struct {
			name string
			dst  *string
			dirs []string
		}{
			{"samba", &t.samba, []string{"/usr/sbin", "/usr/local/sbin"}},
			{"samba-tool", &t.sambaTool, []string{"/usr/bin", "/usr/local/bin"}},
			{"ip", &t.ip, []string{"/usr/sbin", "/sbin", "/usr/bin"}},
		} {
			*p.dst = findProgram(p.name, p.dirs)
			if *p.dst == "" {
				missing = append(missing, p.name)
			}
		}
		// Debian installs Samba's Python module for its own python3 only.
		t.python = "/usr/bin/python3"
		if err := exec.Command(t.python, "-c", "import samba.samdb").Run(); err != nil {
			missing = append(missing, "Samba's Python module for /usr/bin/python3")
		}
		if _, err := os.Stat("/usr/share/samba/setup"); err != nil {
			missing = append(missing, "Samba's provisioning data (/usr/share/samba/setup)")
		}
		if len(missing) > 0 {
			toolsErr = fmt.Errorf("%s not found: install apt-get install --no-install-recommends %s", strings.Join(missing, ", "), packages)
			return
		}
		out, err := exec.Command(t.samba, "--version").CombinedOutput()
		if err != nil {
			toolsErr = fmt.Errorf("%s --version: %v: %s", t.samba, err, out)
			return
		}
		t.version = strings.TrimSpace(string(out))
		toolsVal = t
	})
	return toolsVal, toolsErr
}

func findProgram(name string, dirs []string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// DC starts a domain controller for the test (see the package
// documentation for what it holds), waits until it answers LDAP and LDAPS,
// and stops it and removes its network namespace when the test ends.
func DC(t testing.TB) *Server {
	t.Helper()
	tl, err := findTools()
	if err != nil {
		unavailable(t, err.Error())
	}
	start := time.Now()
	dir, err := os.MkdirTemp("", dcTempPrefix) // short: Samba's sockets live inside
	if err != nil {
		t.Fatalf("sambatest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs last, after samba is gone

	dc := &dc{t: t, tools: tl, dir: dir}
	var nw network
	err = withLock(func() error {
		tmpl, err := ensureTemplate(tl)
		if err != nil {
			return err
		}
		if out, err := exec.Command("cp", "-a", tmpl+"/.", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("copying the template: %v: %s", err, out)
		}
		dc.template = tmpl
		nw, err = dc.createNetwork()
		return err
	})
	if err != nil {
		t.Fatalf("sambatest: %v", err)
	}
	t.Cleanup(dc.removeNetwork)
	if err := dc.configure(nw); err != nil {
		t.Fatalf("sambatest: %v", err)
	}
	t.Cleanup(dc.stop)
	if err := dc.start(); err != nil {
		t.Fatalf("sambatest: %v", err)
	}
	t.Logf("sambatest: DC %s ready in %v (namespace %s)", nw.dcIP, time.Since(start).Round(time.Millisecond), nw.ns)
	return &Server{
		IP:        nw.dcIP.String(),
		URL:       "ldap://" + nw.dcIP.String(),
		LDAPSURL:  "ldaps://" + nw.dcIP.String(),
		KDC:       net.JoinHostPort(nw.dcIP.String(), "88"),
		CAFile:    filepath.Join(dir, "tls", "ca.pem"),
		Dir:       dir,
		Namespace: nw.ns,
		Host:      nw.host(),
		stop:      dc.stop,
	}
}

type dc struct {
	t        testing.TB
	tools    tools
	dir      string
	template string
	net      network

	cmd      *exec.Cmd
	exited   chan struct{}
	watchdog *ldaptest.Watchdog
}

type network struct {
	ns, hostIf, dcIf string
	hostIP, dcIP     net.IP
}

// host is the DC's own name in its certificate: dcN.example.test for
// 10.213.N.2.
func (nw network) host() string { return fmt.Sprintf("dc%d.%s", nw.dcIP[2], MailDomain) }

// withLock runs f holding the file lock shared by every test process on
// the machine: template making, copying and network allocation happen
// one at a time.
func withLock(f func() error) error {
	lf, err := os.OpenFile(filepath.Join(os.TempDir(), lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", lf.Name(), err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	return f()
}

// ensureTemplate returns the provisioned and seeded template, making it if
// this Samba version and seed have none yet. The lock is held.
func ensureTemplate(tl tools) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", templateVersion, tl.version)
	h.Write(seedScript)
	key := hex.EncodeToString(h.Sum(nil))[:16]
	dir := filepath.Join(os.TempDir(), tmplPrefix+key)
	if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
		return dir, nil
	}
	// Templates of other versions are stale; nobody uses them while the
	// lock is held.
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), tmplPrefix+"*"))
	for _, o := range old {
		if fi, err := os.Stat(o); err == nil && fi.IsDir() {
			os.RemoveAll(o)
		}
	}
	if err := provision(tl, dir); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("making the template DC in %s: %w", dir, err)
	}
	return dir, os.WriteFile(filepath.Join(dir, "ready"), []byte(tl.version+"\n"), 0o644)
}

func provision(tl tools, dir string) error {
	for _, d := range []string{"log", "run", "tls"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	// An empty configuration to start from: without -s, samba-tool merges
	// the system's /etc/samba/smb.conf into the new one.
	seedConf := filepath.Join(dir, "seed.conf")
	if err := os.WriteFile(seedConf, []byte("[global]\n"), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), provisionMax)
	defer cancel()
	if err := run(ctx, filepath.Join(dir, "log", "provision.log"), tl.sambaTool, "domain", "provision",
		"-s", seedConf, "--targetdir="+dir, "--realm="+Realm, "--domain="+NetBIOS,
		"--server-role=dc", "--dns-backend=NONE", "--host-name=dc1", "--host-ip=10.213.255.254",
		"--adminpass="+AdminPassword, "--option=interfaces=127.0.0.1/8", "--option=bind interfaces only=yes"); err != nil {
		return err
	}
	// Keep every path inside the DC's directory, answer LDAP and Kerberos
	// (the KDC, for GSSAPI binds) only, and refuse simple binds without
	// TLS as Active Directory does by default. allow_sasl_over_tls is
	// Active Directory's rule too: a SASL bind without signing or sealing
	// only over TLS (Samba's "yes" refuses it even there).
	conf := filepath.Join(dir, "etc", "smb.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	var extra strings.Builder
	for _, kv := range [][2]string{
		{"pid directory", dir + "/run"},
		{"winbindd socket directory", dir + "/run/winbindd"},
		{"ncalrpc dir", dir + "/run/ncalrpc"},
		{"ntp signd socket directory", dir + "/run/ntp_signd"},
		{"log file", dir + "/log/samba.log"},
		{"log level", "1"},
		{"ldap server require strong auth", "allow_sasl_over_tls"},
		{"dsdb:schema update allowed", "true"},
		{"tls enabled", "yes"},
		{"tls keyfile", dir + "/tls/key.pem"},
		{"tls certfile", dir + "/tls/cert.pem"},
		{"tls cafile", dir + "/tls/ca.pem"},
	} {
		fmt.Fprintf(&extra, "\t%s = %s\n", kv[0], kv[1])
	}
	var out []string
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "server services") {
			continue
		}
		out = append(out, line)
		if strings.TrimSpace(line) == "[global]" {
			out = append(out, extra.String(), "\tserver services = ldap kdc\n")
		}
	}
	if err := os.WriteFile(conf, []byte(strings.Join(out, "")), 0o644); err != nil {
		return err
	}
	script := filepath.Join(dir, "seed.py")
	if err := os.WriteFile(script, seedScript, 0o644); err != nil {
		return err
	}
	return run(ctx, filepath.Join(dir, "log", "seed.log"), tl.python, script, conf, UserPassword, ServicePassword)
}

// run runs a command with its output in logFile, and says what went
// wrong with the log's tail when it fails.
func run(ctx context.Context, logFile, name string, args ...string) error {
	lf, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v%s", filepath.Base(name), args[0], err, tail(logFile))
	}
	return nil
}

func tail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	return "\n" + file + ":\n" + string(b)
}

// createNetwork makes a network namespace and a veth pair on the first
// free 10.213.N.0/24, and starts the watchdog that removes them (and
// whatever runs inside) if the test process dies. The lock is held.
func (d *dc) createNetwork() (network, error) {
	for n := 1; n <= 250; n++ {
		nw := network{
			ns:     fmt.Sprintf("mailbeacon-dc%d-%d", n, os.Getpid()),
			hostIf: fmt.Sprintf("mbdc%dh", n),
			dcIf:   fmt.Sprintf("mbdc%dn", n),
			hostIP: net.ParseIP(fmt.Sprintf("%s%d.1", netPrefix, n)).To4(),
			dcIP:   net.ParseIP(fmt.Sprintf("%s%d.2", netPrefix, n)).To4(),
		}
		if inUse(nw) {
			continue
		}
		d.net = nw
		if err := d.ip("netns", "add", nw.ns); err != nil {
			return nw, err
		}
		d.startWatchdog()
		for _, args := range [][]string{
			{"-n", nw.ns, "link", "set", "lo", "up"},
			{"link", "add", nw.hostIf, "type", "veth", "peer", "name", nw.dcIf, "netns", nw.ns},
			{"addr", "add", nw.hostIP.String() + "/24", "dev", nw.hostIf},
			{"link", "set", nw.hostIf, "up"},
			{"-n", nw.ns, "addr", "add", nw.dcIP.String() + "/24", "dev", nw.dcIf},
			{"-n", nw.ns, "link", "set", nw.dcIf, "up"},
		} {
			if err := d.ip(args...); err != nil {
				d.removeNetwork()
				return nw, err
			}
		}
		return nw, nil
	}
	return network{}, fmt.Errorf("no free subnet in %s0.0/16 (ip netns list shows namespaces left behind?)", netPrefix)
}

// inUse reports whether the names or the subnet of nw are taken: by an
// interface, an address or a route of the host.
func inUse(nw network) bool {
	for _, name := range []string{nw.hostIf, nw.dcIf} {
		if _, err := net.InterfaceByName(name); err == nil {
			return true
		}
	}
	subnet := &net.IPNet{IP: nw.hostIP.Mask(net.CIDRMask(24, 32)), Mask: net.CIDRMask(24, 32)}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && (subnet.Contains(ipn.IP) || ipn.Contains(nw.dcIP)) && !ipn.IP.IsLoopback() {
			return true
		}
	}
	return routed(nw.dcIP)
}

// routed reports whether a route other than the default one covers ip
// (from /proc/net/route: little-endian hex destination and mask).
func routed(ip net.IP) bool {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(fs[1], 16, 32)
		mask, err2 := strconv.ParseUint(fs[7], 16, 32)
		if err1 != nil || err2 != nil || mask == 0 {
			continue
		}
		le := func(v uint64) net.IP { return net.IPv4(byte(v), byte(v>>8), byte(v>>16), byte(v>>24)) }
		n := &net.IPNet{IP: le(dst).To4(), Mask: net.IPMask(le(mask).To4())}
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func (d *dc) ip(args ...string) error {
	out, err := exec.Command(d.tools.ip, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// removeNetwork kills whatever still runs in the namespace, then removes
// the veth pair and the namespace.
func (d *dc) removeNetwork() {
	nw := d.net
	if nw.ns == "" {
		return
	}
	d.killNamespace(syscall.SIGKILL)
	_ = d.ip("link", "del", nw.hostIf) // gone with the namespace anyway
	if err := d.ip("netns", "del", nw.ns); err != nil {
		d.t.Errorf("sambatest: %v", err)
	}
	d.stopWatchdog()
	d.net.ns = ""
}

// killNamespace signals every process in the DC's namespace: all of them
// are the DC's, since the namespace is.
func (d *dc) killNamespace(sig syscall.Signal) int {
	out, err := exec.Command(d.tools.ip, "netns", "pids", d.net.ns).Output()
	if err != nil {
		return 0
	}
	n := 0
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			if syscall.Kill(pid, sig) == nil {
				n++
			}
		}
	}
	return n
}

// watchdogScript removes the namespace $1 and the veth $2, killing what
// runs inside, and the DC's directory $3, when its standard input reaches
// EOF: when the test process exits by any means, including those that skip
// t.Cleanup (a test timeout's panic, SIGKILL). After a normal cleanup the
// namespace is gone and it has nothing to do.
const watchdogScript = `read -r _ || :
ip netns list 2>/dev/null | grep -q "^$1\( \|$\)" || exit 0
pids=$(ip netns pids "$1" 2>/dev/null)
[ -n "$pids" ] && kill $pids 2>/dev/null
for i in 1 2 3 4 5 6 7 8 9 10; do
  [ -z "$(ip netns pids "$1" 2>/dev/null)" ] && break
  sleep 0.5
done
pids=$(ip netns pids "$1" 2>/dev/null)
[ -n "$pids" ] && kill -9 $pids 2>/dev/null
ip link del "$2" 2>/dev/null
ip netns del "$1" 2>/dev/null
case "$3" in */` + dcTempPrefix + `*) rm -rf -- "$3" ;; esac
exit 0
`

func (d *dc) startWatchdog() {
	env := append(os.Environ(), "PATH="+filepath.Dir(d.tools.ip)+":"+os.Getenv("PATH"))
	wd, err := ldaptest.StartWatchdog(watchdogScript, "sambatest-watchdog", env, d.net.ns, d.net.hostIf, d.dir)
	if err != nil {
		d.t.Logf("sambatest: no watchdog: %v", err)
	}
	d.watchdog = wd
}

func (d *dc) stopWatchdog() {
	d.watchdog.Stop(stopWait + 5*time.Second)
	d.watchdog = nil
}

// configure points the copied configuration at this directory and
// network, and makes the DC's certificate.
func (d *dc) configure(nw network) error {
	for _, sub := range []string{"run", "log"} {
		p := filepath.Join(d.dir, sub)
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	conf := filepath.Join(d.dir, "etc", "smb.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	text := strings.ReplaceAll(string(b), d.template, d.dir)
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "interfaces =") {
			line = "\tinterfaces = " + nw.dcIP.String() + "/24 127.0.0.1/8"
		}
		lines = append(lines, line)
	}
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		return err
	}
	tlsDir := filepath.Join(d.dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o755); err != nil {
		return err
	}
	return ldaptest.WriteServerCert(filepath.Join(tlsDir, "ca.pem"), filepath.Join(tlsDir, "cert.pem"),
		filepath.Join(tlsDir, "key.pem"), []string{"dc1.example.test", "example.test", nw.host()}, []net.IP{nw.dcIP})
}

// start runs samba in the namespace, in a process group of its own, and
// waits until it answers.
func (d *dc) start() error {
	logf, err := os.Create(filepath.Join(d.dir, "log", "stdout.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	conf := filepath.Join(d.dir, "etc", "smb.conf")
	d.cmd = exec.Command(d.tools.ip, "netns", "exec", d.net.ns, d.tools.samba, "-s", conf,
		"-F", "--no-process-group", fmt.Sprintf("--maximum-runtime=%d", int(maxRuntime.Seconds())))
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("starting samba: %w", err)
	}
	d.exited = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.exited) }()

	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(d.dir, "tls", "ca.pem"))
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(pem)
	deadline := time.Now().Add(readyMax)
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("samba exited while starting: %v%s%s", d.cmd.ProcessState,
				tail(filepath.Join(d.dir, "log", "stdout.log")), tail(filepath.Join(d.dir, "log", "samba.log")))
		default:
		}
		if answers(d.net.dcIP.String(), pool) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("samba did not answer on %s within %v%s", d.net.dcIP, readyMax, tail(filepath.Join(d.dir, "log", "samba.log")))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// answers reports whether the DC serves its root DSE over LDAP and
// completes a TLS handshake on the LDAPS port.
func answers(ip string, roots *x509.CertPool) bool {
	c, err := ldap.DialURL("ldap://"+ip, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetTimeout(time.Second)
	if _, err := c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"defaultNamingContext"}, nil)); err != nil {
		return false
	}
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", net.JoinHostPort(ip, "636"),
		&tls.Config{RootCAs: roots, ServerName: ip, MinVersion: tls.VersionTLS12})
	if err != nil {
		return false
	}
	tc.Close()
	return true
}

// stop ends samba's process group: SIGTERM, then SIGKILL.
func (d *dc) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	pgid := d.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(stopWait):
		d.t.Logf("sambatest: samba %d ignored SIGTERM for %v; SIGKILL", pgid, stopWait)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-d.exited
	}
	// Children that outlived their parent, if any, leave too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	for i := 0; i < 50 && d.killNamespace(syscall.SIGKILL) > 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	d.cmd = nil
}
