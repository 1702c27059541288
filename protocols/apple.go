package protocols

import (
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mailbeacon/mailbeacon/policy"
)

// AppleOptions configures Apple configuration profiles (protocols/CLIENTS.md
// §4): the apple section of the configuration.
type AppleOptions struct {
	// Organization is PayloadOrganization, shown on the profile's detail
	// screen; empty means the domain's provider name.
	Organization string `mapstructure:"organization"`
	// Signing names the PEM files a profile is signed with. Unset: profiles
	// are served unsigned, which iOS shows as "Unverified" but installs.
	Signing AppleSigning `mapstructure:"signing"`

	signer *profileSigner // loaded by Prepare when Signing is set
}

// AppleSigning is the apple.signing section.
type AppleSigning struct {
	// CertFile holds the signing certificate (PEM). A certificate from a
	// CA the devices trust makes iOS show the profile as "Verified".
	CertFile string `mapstructure:"cert_file"`
	// KeyFile holds its private key (PEM, PKCS#8, PKCS#1 or SEC 1; RSA or
	// ECDSA; not encrypted).
	KeyFile string `mapstructure:"key_file"`
	// ChainFile optionally holds the intermediate certificates (PEM), the
	// issuer of CertFile first, so a device can build the path to its root.
	ChainFile string `mapstructure:"chain_file"`
}

// Prepare validates the options and loads the files they name, once at
// start-up. Errors name the configuration key at fault.
func (o *AppleOptions) Prepare() error {
	o.signer = nil
	s := o.Signing
	if s.CertFile == "" && s.KeyFile == "" && s.ChainFile == "" {
		return nil
	}
	signer, err := loadSigner(s, time.Now())
	if err != nil {
		return err
	}
	o.signer = signer
	return nil
}

// Signed reports whether Prepare loaded a signing certificate.
func (o *AppleOptions) Signed() bool { return o.signer != nil }

// profileMIME is the only type iOS installs a profile from; served as
// anything else Safari shows the plist as text (quirk 23).
const profileMIME = "application/x-apple-aspen-config"

// mobileconfig serves GET /mobileconfig?emailaddress=…[&platform=mac]: the
// configuration profile made for that address, signed when a certificate is
// configured. The setup page links here.
func (h *Handler) mobileconfig(c *call) error {
	raw := strings.TrimSpace(queryValue(c.r, "emailaddress"))
	if raw == "" {
		return errMissingAddress
	}
	addr, err := policy.ParseAddress(raw)
	if err != nil {
		return errBadAddress
	}
	plat, ok := parsePlatform(queryValue(c.r, "platform"))
	if !ok {
		return &httpError{http.StatusBadRequest, "platform must be ios or mac"}
	}
	acct, err := c.resolve(addr)
	if err != nil {
		return err
	}
	p := buildProfile(acct, profileOptions{Organization: h.opts.Apple.Organization, Platform: plat})
	if len(p.PayloadContent) == 0 {
		return &httpError{http.StatusNotFound, "no settings for this address that a profile can carry"}
	}
	body, err := encodeProfile(p)
	if err != nil {
		return fmt.Errorf("rendering profile: %w", err)
	}
	if sg := h.opts.Apple.signer; sg != nil {
		sg.warnIfExpired(h.log)
		if body, err = sg.sign(body); err != nil {
			return fmt.Errorf("signing profile: %w", err)
		}
	}
	c.w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": profileFilename(acct, plat)}))
	// Made for one user: no shared cache may keep it, and a re-download
	// must fetch the current entitlements.
	c.send(http.StatusOK, profileContentType, privateNoStore, body)
	return nil
}

var (
	profileContentType = []string{profileMIME}
	privateNoStore     = []string{"private, no-store"}
	noCache            = []string{"no-cache"}
)

// profileFilename is e.g. "alice-example.com.mobileconfig": ASCII only, and
// distinct per user so two downloads on one device do not overwrite. It is
// made of the address asked, never the primary address an alias leads to:
// a file name must not tell which addresses are aliases of whom.
func profileFilename(a *policy.Account, p platform) string {
	name := identifierLabel(a.Address.Local) + "-" + a.Address.Domain
	if p == platformMac {
		name += "-mac"
	}
	return name + ".mobileconfig"
}

// wellKnownDAV answers /.well-known/caldav and /.well-known/carddav (RFC
// 6764 §5, CLIENTS.md §5.3) with a redirect to the DAV URL the
// domain named by the Host header configures, or 404.
func (h *Handler) wellKnownDAV(k policy.Kind) func(*call) error {
	return func(c *call) error {
		d, err := c.hostDomain(policy.AutoconfigPrefix, policy.AutodiscoverPrefix)
		if err != nil {
			return err
		}
		target := ""
		for _, svc := range d.Services {
			if svc.Kind == k {
				target = svc.URL
				break
			}
		}
		if target == "" || redirectsToItself(c.r, target) {
			// A DAV URL that is the well-known URI itself would loop; the
			// RFC says the service MUST NOT live there.
			return &httpError{http.StatusNotFound, "no " + string(k) + " service configured for this domain"}
		}
		// The location may change with the configuration, so caches must
		// revalidate (RFC 6764 §5 suggests no-cache for exactly this).
		c.redirect(http.StatusMovedPermanently, target, noCache)
		return nil
	}
}

func redirectsToItself(r *http.Request, target string) bool {
	u, err := url.Parse(target)
	if err != nil {
		return true
	}
	return strings.EqualFold(u.Host, r.Host) && strings.TrimSuffix(u.Path, "/") == strings.TrimSuffix(r.URL.Path, "/")
}

// platform is the device family a profile is made for.
type platform int

const (
	platformIOS platform = iota // iPhone, iPad, visionOS: the default
	platformMac
)

func parsePlatform(s string) (platform, bool) {
	switch strings.ToLower(s) {
	case "", "ios", "ipados", "iphone", "ipad":
		return platformIOS, true
	case "mac", "macos":
		return platformMac, true
	}
	return 0, false
}
