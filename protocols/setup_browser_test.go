package protocols

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestSetupPageBrowser opens the setup page in headless Chromium (Debian's
// chromium package), types bob@example.com, clicks the button, checks the
// settings shown and the profile link, and saves a screenshot as a test
// artifact in $MAILBEACON_ARTIFACTS (default: artifacts/ at the repository
// root). Without chromium it is skipped, or fails under CI=true.
func TestSetupPageBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	chromium := appleNeedTool(t, "chromium", "chromium")

	// The real stack behind the page; httptest listens on 127.0.0.1 only.
	srv := httptest.NewServer(NewHandler(appleDemoResolver(t), Options{}))
	defer srv.Close()

	profileDir, err := os.MkdirTemp("", "mailbeacon-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(profileDir)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profileDir),
	)
	// Everything, browser start included, is bounded.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()

	// A phone-sized viewport: the page must be readable there.
	if err := chromedp.Do(bctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("emailaddress")),
	); err != nil {
		t.Fatalf("loading the page in chromium: %v", err)
	}
	label, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`label[for="emailaddress"]`)))
	if err != nil || !strings.Contains(label, "e-mail address") {
		t.Errorf("the address field's label is %q (%v)", label, err)
	}

	// A person types the address and presses the button: a real click
	// submitting the GET form, no JavaScript on the page.
	if err := chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.ID("emailaddress"), "bob@example.com"),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("settings")),
	); err != nil {
		t.Fatalf("submitting the form: %v", err)
	}
	loc, err := chromedp.Run(bctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if u, err := url.Parse(loc); err != nil || u.Path != "/" || u.Query().Get("emailaddress") != "bob@example.com" {
		t.Errorf("the form went to %q", loc)
	}

	texts := func(css string) []string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll(`+jsString(css)+`), e => e.textContent.trim())`))
		if err != nil {
			t.Fatalf("reading %s: %v", css, err)
		}
		return v
	}
	headings := strings.Join(texts(".server h3"), " | ")
	for _, want := range []string{"Incoming mail (IMAP)", "Outgoing mail (SMTP)"} {
		if !strings.Contains(headings, want) {
			t.Errorf("shown servers %q lack %q", headings, want)
		}
	}
	for _, unwanted := range []string{"POP3", "ActiveSync"} {
		if strings.Contains(headings, unwanted) {
			t.Errorf("bob may not use %s, yet the page shows %q", unwanted, headings)
		}
	}
	if got := strings.Join(texts(`[data-kind="incoming"] dd.host, [data-kind="incoming"] dd.port, [data-kind="incoming"] dd.security`), " "); got != "mail.example.com 993 SSL/TLS" {
		t.Errorf("incoming server shown as %q", got)
	}
	if got := strings.Join(texts(`[data-kind="outgoing"] dd.port`), " "); got != "465 587" {
		t.Errorf("outgoing ports shown: %q", got)
	}
	for _, login := range texts("dd.login") {
		if login != "bob.login" {
			t.Errorf("login name shown as %q, want bob.login", login)
		}
	}

	href, err := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.ID("profile-link"), "href"))
	if err != nil || !href.Exists {
		t.Fatalf("no profile link: %v", err)
	}
	visible, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID("profile-link")))
	if err != nil || !strings.Contains(visible, "Download") {
		t.Errorf("profile link text %q (%v)", visible, err)
	}

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(artifactsDir(t), "setup-page-bob.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the setup page: %s", path)

	// The link the page shows downloads bob's profile: no EAS payload.
	base, _ := url.Parse(loc)
	ref, err := url.Parse(href.Value)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Get(base.ResolveReference(ref).String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != profileMIME {
		t.Fatalf("profile link %s: status %d, type %q", href.Value, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := applePayloads(t, appleDecodePlist(t, body))
	if _, ok := p["com.apple.eas.account"]; ok {
		t.Error("bob's profile from the page has an EAS payload")
	}
	if m := p["com.apple.mail.managed"]; m == nil || m["IncomingMailServerUsername"] != "bob.login" {
		t.Errorf("bob's mail payload: %v", m)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// artifactsDir is $MAILBEACON_ARTIFACTS, or artifacts/ at the repository
// root, created if needed.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MAILBEACON_ARTIFACTS")
	if dir == "" {
		root, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(root)
			if parent == root {
				t.Fatal("no go.mod above the test's directory: set MAILBEACON_ARTIFACTS")
			}
			root = parent
		}
		dir = filepath.Join(root, "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
