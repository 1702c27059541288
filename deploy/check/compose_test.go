package check

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
)

// compose.yaml loads with the Compose specification's own loader, which
// validates it against the specification's schema, offline; then the
// files it names exist and fit together.
func TestComposeFile(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{"../compose.yaml"}, cli.WithWorkingDirectory(".."), cli.WithName("mailbeacon"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	ldap, err := p.GetService("openldap")
	if err != nil {
		t.Fatal(err)
	}
	mb, err := p.GetService("mailbeacon")
	if err != nil {
		t.Fatal(err)
	}
	if ldap.Build == nil {
		t.Fatal("openldap: no build section")
	}
	if _, err := os.Stat(filepath.Join(ldap.Build.Context, ldap.Build.Dockerfile)); err != nil {
		t.Errorf("openldap's Containerfile: %v", err)
	}
	if ldap.HealthCheck == nil || len(ldap.HealthCheck.Test) == 0 {
		t.Error("openldap: no healthcheck for mailbeacon to wait on")
	}
	if dep, ok := mb.DependsOn["openldap"]; !ok || dep.Condition != "service_healthy" {
		t.Errorf("mailbeacon must wait for a healthy openldap: %+v", mb.DependsOn)
	}
	if mb.Image != "localhost/mailbeacon:latest" {
		t.Errorf("mailbeacon image %q: want the one make image builds", mb.Image)
	}
	if len(mb.Ports) != 1 || mb.Ports[0].Target != 8080 || mb.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("mailbeacon ports %+v: want 127.0.0.1:8080 -> 8080", mb.Ports)
	}
	if !mb.ReadOnly || len(mb.CapDrop) != 1 || mb.CapDrop[0] != "ALL" {
		t.Errorf("mailbeacon: want read_only and cap_drop ALL")
	}
	// The scratch image has no shell: the binary is the probe, asking
	// the operations listener the configuration opens.
	hc := mb.HealthCheck
	configText, err := os.ReadFile("../compose/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if hc == nil || len(hc.Test) < 4 || hc.Test[0] != "CMD" || hc.Test[1] != "/usr/bin/mailbeacon" || hc.Test[2] != "health" {
		t.Errorf("mailbeacon healthcheck %+v: want [CMD /usr/bin/mailbeacon health ...]", hc)
	} else if ops := regexp.MustCompile(`(?m)^operations:\n  listen: :(\d+)$`).FindStringSubmatch(string(configText)); ops == nil ||
		!slices.Contains(hc.Test, "http://127.0.0.1:"+ops[1]+"/healthz") {
		t.Errorf("mailbeacon healthcheck %q: want --url http://127.0.0.1:PORT/healthz, PORT of operations.listen in compose/config.yaml", hc.Test)
	}
	if len(mb.Configs) != 1 || mb.Configs[0].Target != "/etc/mailbeacon/config.yaml" {
		t.Fatalf("mailbeacon configs %+v: want the configuration at /etc/mailbeacon/config.yaml", mb.Configs)
	}
	if _, err := os.Stat(p.Configs[mb.Configs[0].Source].File); err != nil {
		t.Errorf("config file: %v", err)
	}
	if len(mb.Secrets) != 1 || mb.Secrets[0].Source != "ldap-password" {
		t.Fatalf("mailbeacon secrets %+v: want ldap-password", mb.Secrets)
	}
	if _, err := os.Stat(p.Secrets["ldap-password"].File); err != nil {
		t.Errorf("secret file: %v", err)
	}
}
