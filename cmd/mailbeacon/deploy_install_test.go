package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The configurations shipped in deploy/ (the Kubernetes base's and example
// overlay's config.yaml, compose) pass `config check` with the password
// where their Secret puts it (and state_dir, the pod's emptyDir, in a
// directory of the test's).
// (deploy/check builds and validates the manifests themselves;
// .ci/package-test the package and the image.)
func TestDeployConfigurationsPassConfigCheck(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "ldap-password")
	writeFile(t, pw, "secret\n")
	t.Setenv("MAILBEACON_LDAP_BIND_PASSWORD_FILE", pw)
	t.Setenv("MAILBEACON_STATE_DIR", filepath.Join(dir, "state"))
	for _, f := range []string{
		filepath.Join(deployDir, "kubernetes", "base", "config.yaml"),
		filepath.Join(deployDir, "kubernetes", "overlays", "example", "config.yaml"),
		filepath.Join(deployDir, "compose", "config.yaml"),
	} {
		if code, out, errOut := runConfigCheck(t, f); code != 0 {
			t.Errorf("%s: exit %d\n%s%s", f, code, out, errOut)
		}
	}
}

// The compose example's OpenLDAP start script, run with Debian's slapd on
// loopback, serves a directory that the compose configuration binds to and
// finds bob in.
func TestComposeDirectory(t *testing.T) {
	needTool(t, "slapd")
	needTool(t, "slapadd")
	dir := t.TempDir()
	seed := filepath.Join(dir, "seed")
	if err := os.Mkdir(seed, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{
		"../../ldapsource/ldaptest/mailbeacon.schema":     "mailbeacon.schema",
		"../../ldapsource/embedded/demo/demo.ldif":        "demo.ldif",
		filepath.Join(deployDir, "compose/ldap-password"): "ldap-password",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(seed, dst), string(b))
	}
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "sh", filepath.Join(deployDir, "compose/openldap-start.sh"))
	cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"DATA_DIR="+filepath.Join(dir, "data"), "SEED_DIR="+seed,
		fmt.Sprintf("LISTEN=ldap://127.0.0.1:%d/", port))
	var out lockedWriter
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slapd did not start:\n%s", out.String())
		}
	}
	b, err := os.ReadFile(filepath.Join(deployDir, "compose/config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "config.yaml")
	writeFile(t, conf, strings.ReplaceAll(string(b), "ldap://openldap:1389", "ldap://"+addr))
	t.Setenv("MAILBEACON_LDAP_BIND_PASSWORD_FILE", filepath.Join(seed, "ldap-password"))
	code, stdout, stderr := runConfigCheck(t, "--online", conf)
	if code != 0 || !strings.Contains(stdout, "domain example.com: searched") {
		t.Fatalf("config check --online: exit %d\n%s%s\nslapd: %s", code, stdout, stderr, out.String())
	}
	var lo, le bytes.Buffer
	if code := run(context.Background(), []string{"lookup", "--config", conf, "bob@example.com"}, &lo, &le); code != 0 {
		t.Fatalf("lookup: exit %d: %s", code, le.String())
	}
	var got lookupOutput
	if err := json.Unmarshal(lo.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !got.Account.Known || got.Account.Services[0].Login != "bob.login" {
		t.Errorf("bob from the compose directory: %+v", got.Account)
	}
}
