package ldapsource

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// DefaultLockedRetryInterval is ldap.locked_retry_interval's default: how
// often a service account the directory reports locked out (AD 775) is
// tried again while its credentials are not known to be wrong.
const DefaultLockedRetryInterval = 15 * time.Minute

var (
	// ErrRefusedBefore marks a lookup refused without asking the
	// directory, because it refused the same service-account credentials
	// before: mailbeacon never binds with them again.
	ErrRefusedBefore = errors.New("the directory refused these service-account credentials before; mailbeacon does not bind with them again until ldap.bind_dn, the password (or the keytab's content) or ldap.urls change")
	// ErrLockedOut marks a lookup refused without asking the directory,
	// because it reported the service account locked out (AD 775) less
	// than ldap.locked_retry_interval ago.
	ErrLockedOut = errors.New("the directory reported the service account locked out")
)

// Names of the files a Refusals keeps in its directory.
const (
	refusalsKeyFile  = "credentials.key"
	refusalsFile     = "refused-credentials.json"
	maxRefusalRecord = 64 // the oldest records go beyond this
)

// Refusals remembers which service-account credentials the directory
// refused, so that mailbeacon never binds with them twice: not on the next
// request, not after a reload, and, kept in a directory, not after a
// restart. Credentials are known by a keyed digest (HMAC-SHA256 of the
// URLs, the bind DN and the password under a random key kept beside the
// records), never by the password or an unkeyed hash of it.
//
// One Refusals serves a process: every Source handed it shares the bind
// gate of the same connection settings, so a reload that keeps them keeps
// the gate's state too.
type Refusals struct {
	dir string // "": remembered in memory only
	key []byte

	mu      sync.Mutex
	records map[string]refusal   // by credentials digest
	told    map[string]bool      // digests whose hold this process has logged
	gates   map[string]*bindGate // by connection identity (identity)
}

// refusal is one remembered refusal, as stored in refusalsFile.
type refusal struct {
	Digest string    `json:"digest"`
	At     time.Time `json:"at"`
	// Locked: the directory said the account is locked out (AD 775), not
	// that the credentials are wrong; they are tried again at RetryAt.
	Locked  bool      `json:"locked,omitempty"`
	RetryAt time.Time `json:"retry_at,omitzero"`
	Key     string    `json:"key"`
	Reason  string    `json:"reason"`
	Fix     string    `json:"fix"`
	Err     string    `json:"error"`
}

// NewRefusals returns a Refusals that forgets when the process exits.
func NewRefusals() *Refusals {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails
	return &Refusals{key: key, records: map[string]refusal{}, told: map[string]bool{}, gates: map[string]*bindGate{}}
}

// OpenRefusals returns a Refusals kept in dir, which it creates (mode
// 0700) if missing; "" means NewRefusals. The digest key is made on
// first use and kept in dir.
func OpenRefusals(dir string) (*Refusals, error) {
	if dir == "" {
		return NewRefusals(), nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	r := NewRefusals()
	r.dir = dir
	keyFile := filepath.Join(dir, refusalsKeyFile)
	key, err := os.ReadFile(keyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Written to a temporary file and linked into place, so that two
		// processes starting together end up with one key.
		if err := writeFileAtomic(dir, refusalsKeyFile, []byte(hex.EncodeToString(r.key)+"\n"), true); err != nil {
			return nil, err
		}
		if key, err = os.ReadFile(keyFile); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	if r.key, err = hex.DecodeString(strings.TrimSpace(string(key))); err != nil || len(r.key) < 16 {
		return nil, fmt.Errorf("%s: not a key this program wrote: remove it (the refusals it keys are forgotten)", keyFile)
	}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// File returns the file the records are kept in, or "" in memory.
func (r *Refusals) File() string {
	if r == nil || r.dir == "" {
		return ""
	}
	return filepath.Join(r.dir, refusalsFile)
}

// Reload reads the records again from the directory, so that removing the
// file (and reloading) makes mailbeacon try refused credentials once more.
func (r *Refusals) Reload() error {
	if r.dir == "" {
		return nil
	}
	recs, err := r.read()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = recs
	return nil
}

func (r *Refusals) read() (map[string]refusal, error) {
	recs := map[string]refusal{}
	b, err := os.ReadFile(r.File())
	if errors.Is(err, fs.ErrNotExist) {
		return recs, nil
	}
	if err != nil {
		return nil, err
	}
	var list []refusal
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("%s: %w (remove the file to forget the refusals it holds)", r.File(), err)
	}
	for _, rec := range list {
		recs[rec.Digest] = rec
	}
	return recs, nil
}

// digest is the keyed digest of the credentials cfg binds with: for a
// GSSAPI bind the principal, the service principal and the keytab's
// content (a keytab exported again is new credentials).
func (r *Refusals) digest(cfg *Config) string {
	if cfg.Bind == BindGSSAPI {
		return r.mac("gssapi credentials", append(slices.Clone(cfg.URLs), cfg.Principal, cfg.ServicePrincipal, string(cfg.keytabContent)))
	}
	return r.mac("credentials", append(slices.Clone(cfg.URLs), cfg.BindDN, cfg.BindPassword))
}

// identity is the keyed digest of everything that decides how a bind as
// the service account goes: the credentials and the TLS settings,
// including the CA file's content. Sources with the same identity share
// a gate.
func (r *Refusals) identity(cfg *Config) string {
	ca := []byte(cfg.CAFile)
	if cfg.CAFile != "" {
		if b, err := os.ReadFile(cfg.CAFile); err == nil {
			ca = b
		}
	}
	return r.mac("identity", []string{r.digest(cfg), fmt.Sprint(cfg.StartTLS, cfg.InsecureSkipVerify), cfg.ServerName, string(ca)})
}

// mac is the HMAC of the fields, each preceded by its length so that no
// two lists of fields give the same input.
func (r *Refusals) mac(purpose string, fields []string) string {
	h := hmac.New(sha256.New, r.key)
	h.Write([]byte("mailbeacon " + purpose + " v1"))
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(fields)))])
	for _, f := range fields {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(f)))])
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// gate returns the gate of identity id, made by mk the first time.
func (r *Refusals) gate(id string, mk func() *bindGate) *bindGate {
	r.mu.Lock()
	defer r.mu.Unlock()
	g, ok := r.gates[id]
	if !ok {
		g = mk()
		r.gates[id] = g
	}
	return g
}

// held returns the error binds with the credentials of digest are held
// back with, or nil when they may bind. first reports whether this is the
// first hold this process sees for them.
func (r *Refusals) held(digest string, now time.Time) (err *Error, first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.records[digest]
	if !ok || (rec.Locked && !now.Before(rec.RetryAt)) {
		return nil, false
	}
	first = !r.told[digest]
	r.told[digest] = true
	e := &Error{Kind: Configuration, Key: rec.Key, Reason: rec.Reason, Fix: rec.Fix}
	if rec.Locked {
		e.Err = fmt.Errorf("%w at %s; trying again at %s (ldap.locked_retry_interval): %s",
			ErrLockedOut, rec.At.Format(time.DateTime), rec.RetryAt.Format(time.DateTime), rec.Err)
	} else {
		e.Err = fmt.Errorf("%w (refused at %s: %s)", ErrRefusedBefore, rec.At.Format(time.DateTime), rec.Err)
	}
	return e, first
}

// remember records a refusal, in memory and in the directory. The error
// returned is the directory's: the refusal is remembered in memory anyway.
func (r *Refusals) remember(rec refusal) error {
	r.mu.Lock()
	r.records[rec.Digest] = rec
	r.told[rec.Digest] = true // the refusal itself is logged
	r.mu.Unlock()
	return r.update(func(recs map[string]refusal) { recs[rec.Digest] = rec })
}

// forget drops the record of digest after a bind with it worked.
func (r *Refusals) forget(digest string) error {
	r.mu.Lock()
	_, ok := r.records[digest]
	delete(r.records, digest)
	delete(r.told, digest)
	r.mu.Unlock()
	if !ok {
		return nil
	}
	return r.update(func(recs map[string]refusal) { delete(recs, digest) })
}

// update rewrites the records file with change applied to what it holds
// now: another process (config check --online beside serve) may have
// added records since this one read it.
func (r *Refusals) update(change func(map[string]refusal)) error {
	if r.dir == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock() // one writer per process
	recs, err := r.read()
	if err != nil {
		return err
	}
	change(recs)
	list := make([]refusal, 0, len(recs))
	for _, rec := range recs {
		list = append(list, rec)
	}
	slices.SortFunc(list, func(a, b refusal) int { return b.At.Compare(a.At) })
	list = list[:min(len(list), maxRefusalRecord)]
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(r.dir, refusalsFile, append(b, '\n'), false)
}

// writeFileAtomic writes name in dir through a temporary file, mode 0600,
// owned like dir when written by root (config check --online run by an
// administrator beside a service running as its own user). With
// keepExisting an existing file is left as it is.
func writeFileAtomic(dir, name string, data []byte, keepExisting bool) error {
	f, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	chownLike(tmp, dir)
	if keepExisting {
		if err := os.Link(tmp, filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return nil
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// refusalKind sorts a failed service-account bind: the credentials
// refused (LDAP 49, whatever Active Directory's sub-code says: wrong
// password, no such account, disabled, expired, ...), the account locked
// out (AD 775, which says nothing of the password), or neither.
type refusalKind int

const (
	notRefused refusalKind = iota
	credentialsRefused
	accountLocked
)

func kindOfRefusal(err error) refusalKind {
	if k := kerberosRefusal(err); k != notRefused {
		return k
	}
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		return notRefused
	}
	if m := adSubCode.FindStringSubmatch(err.Error()); m != nil && strings.EqualFold(m[1], "775") {
		return accountLocked
	}
	return credentialsRefused
}

// minLockedRetry bounds ldap.locked_retry_interval from below: a locked
// account is not unlocked by asking often.
const minLockedRetry = time.Minute

func (cfg *Config) checkLockedRetry() error {
	if cfg.LockedRetryInterval == 0 {
		cfg.LockedRetryInterval = DefaultLockedRetryInterval
	}
	if cfg.LockedRetryInterval < minLockedRetry {
		return fmt.Errorf("ldap.locked_retry_interval: %s is too short: give %s or more, e.g. 15m", cfg.LockedRetryInterval, minLockedRetry)
	}
	return nil
}

// UseRefusals makes s remember refused credentials in r, and share the
// bind gate of r's other sources with the same connection settings (a
// reload that keeps them keeps the gate's state). Call it before the
// first lookup. Without it a Source remembers refusals itself.
func (s *Source) UseRefusals(r *Refusals) {
	s.gate = r.gate(r.identity(&s.cfg), func() *bindGate {
		return newBindGate(&s.cfg, r, s.classify, s.log, s.metrics.bindBackoffs)
	})
}

// Held returns the error binds as the service account are held back with
// because the directory refused its credentials (ErrRefusedBefore) or
// reported it locked out (ErrLockedOut), or nil.
func (s *Source) Held() error { return s.gate.held() }

// SameBind reports whether o binds exactly as s does: the same URLs, TLS
// settings, CA, bind DN and password (the content of the password file,
// not its name), remembered in the same Refusals.
func (s *Source) SameBind(o *Source) bool {
	return s.gate == o.gate
}
