package main

// deploy/prometheus/alerts.yaml and deploy/grafana/mailbeacon.json: the
// rules pass promtool's checks and unit tests, the dashboard is a Grafana
// dashboard whose queries parse, and every metric, label and label value
// they name is one a real server serves, so neither can drift from the
// code unnoticed.

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

var (
	alertsFile    = filepath.Join(deployDir, "prometheus", "alerts.yaml")
	alertsTests   = filepath.Join(deployDir, "prometheus", "alerts_test.yaml")
	dashboardFile = filepath.Join(deployDir, "grafana", "mailbeacon.json")
)

// needPromtool returns promtool's path; without it the test skips, or
// fails under CI=true (.ci/deps installs Debian's prometheus package).
func needPromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	const msg = "promtool is not installed (Debian: apt-get install prometheus)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// alertRules is the part of a rules file the tests read.
type alertRules struct {
	Groups []struct {
		Rules []struct {
			Alert string `yaml:"alert"`
			Expr  string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readAlerts(t *testing.T) alertRules {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var r alertRules
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return r
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID           string           `json:"uid"`
	Title         string           `json:"title"`
	SchemaVersion int              `json:"schemaVersion"`
	Panels        []dashboardPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *panelDS        `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panelDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashboardPanel struct {
	ID         int      `json:"id"`
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Datasource *panelDS `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr       string   `json:"expr"`
		RefID      string   `json:"refId"`
		Datasource *panelDS `json:"datasource"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // a collapsed row's
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// grafanaVars stands in for the dashboard's variables, so that its
// queries are PromQL Prometheus and promtool read.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$job", ".*", "$instance", ".*")

// dashboardQueries returns the dashboard's PromQL: each target's
// expression and each query variable's label_values() selector.
func dashboardQueries(t *testing.T, d dashboard) []string {
	t.Helper()
	var out []string
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, grafanaVars.Replace(tg.Expr))
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+), *[a-z_]+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(SELECTOR, LABEL)", v.Name, v.Definition)
			continue
		}
		out = append(out, grafanaVars.Replace(m[1]))
	}
	return out
}

// promtool checks the rules and runs their unit tests; every alert has a
// test that expects it to fire; the dashboard's queries parse (promtool
// checks them as recording rules).
func TestDeployAlertRules(t *testing.T) {
	promtool := needPromtool(t)
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(alertsFile)},
		{"test", "rules", filepath.Base(alertsTests)},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Dir(alertsFile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		} else {
			t.Logf("promtool %s: %s", strings.Join(args, " "), strings.Join(strings.Fields(string(out)), " "))
		}
	}

	// promtool test rules passes for alerts nobody tests: each must fire
	// in at least one case.
	b, err := os.ReadFile(alertsTests)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			fires[at.Alertname] = fires[at.Alertname] || len(at.ExpAlerts) > 0
		}
	}
	n := 0
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !fires[r.Alert] {
				t.Errorf("alert %s: no test in %s expects it to fire", r.Alert, alertsTests)
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s holds no alert", alertsFile)
	}

	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range dashboardQueries(t, readDashboard(t)) {
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %q\n", i, q)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	writeFile(t, f, rules.String())
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries do not parse: %v\n%s", err, out)
	}
}

// The dashboard is one Grafana imports: a schema version, a Prometheus
// datasource variable every query uses, panels that do not overlap.
func TestDeployDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want both set and schemaVersion >= 36", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s: datasource %+v, want ${datasource}", v.Name, v.Datasource)
		}
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("no datasource variable: %v", vars)
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	targets := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if o, ok := used[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at %d,%d", o, p.Title, x, y)
				}
				used[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			targets++
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %+v: want an expression and a refId of its own", p.Title, tg)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: target datasource %+v, want ${datasource}", p.Title, tg.Datasource)
			}
		}
	}
	t.Logf("%d panels, %d queries", len(d.Panels), targets)
}

var (
	seriesLineRE = regexp.MustCompile(`^(mailbeacon_[a-z0-9_]+)(?:\{(.*)\})? `)
	labelPairRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	selectorRE   = regexp.MustCompile(`\b(mailbeacon_[a-z0-9_]+)\s*(?:\{([^}]*)\})?`)
	matcherRE    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	byRE         = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
)

// servedSeries is what /metrics served: family -> label -> values.
type servedSeries map[string]map[string]map[string]bool

func (s servedSeries) add(body string) {
	for line := range strings.Lines(body) {
		m := seriesLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := m[1]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			// A histogram's series count under the family's name too, as
			// the queries name them either way.
			if base, ok := strings.CutSuffix(name, suffix); ok {
				s.put(base, m[2])
			}
		}
		s.put(name, m[2])
	}
}

func (s servedSeries) put(name, labels string) {
	if s[name] == nil {
		s[name] = map[string]map[string]bool{}
	}
	for _, p := range labelPairRE.FindAllStringSubmatch(labels, -1) {
		if s[name][p[1]] == nil {
			s[name][p[1]] = map[string]bool{}
		}
		s[name][p[1]][p[2]] = true
	}
}

// scrapeLabels are the labels Prometheus adds to every series it scrapes.
var scrapeLabels = []string{"instance", "job"}

// check reports the metrics, labels and label values expr names that
// served lacks.
func (s servedSeries) check(expr string) []string {
	var bad []string
	var names []string
	for _, sel := range selectorRE.FindAllStringSubmatch(expr, -1) {
		name := sel[1]
		names = append(names, name)
		labels, ok := s[name]
		if !ok {
			bad = append(bad, "metric "+name)
			continue
		}
		for _, m := range matcherRE.FindAllStringSubmatch(sel[2], -1) {
			label, op, value := m[1], m[2], m[3]
			if slices.Contains(scrapeLabels, label) {
				continue
			}
			values, ok := labels[label]
			if !ok {
				bad = append(bad, fmt.Sprintf("label %s of %s", label, name))
				continue
			}
			switch op {
			case "=":
				if !values[value] {
					bad = append(bad, fmt.Sprintf("%s{%s=%q}", name, label, value))
				}
			case "=~":
				re := regexp.MustCompile("^(?:" + value + ")$")
				for _, alt := range strings.Split(value, "|") {
					// Each alternative of a|b names a value that exists.
					if regexp.QuoteMeta(alt) == alt && !values[alt] {
						bad = append(bad, fmt.Sprintf("%s{%s=%q}", name, label, alt))
					}
				}
				if !slices.ContainsFunc(slices.Collect(maps.Keys(values)), re.MatchString) {
					bad = append(bad, fmt.Sprintf("%s{%s=~%q} matches nothing", name, label, value))
				}
			}
		}
	}
	// Grouping labels: each is a label of a metric the expression reads.
	for _, by := range byRE.FindAllStringSubmatch(expr, -1) {
		for _, label := range strings.Split(by[1], ",") {
			label = strings.TrimSpace(label)
			if label == "" || label == "le" || slices.Contains(scrapeLabels, label) {
				continue
			}
			if !slices.ContainsFunc(names, func(n string) bool { _, ok := s[n][label]; return ok }) {
				bad = append(bad, fmt.Sprintf("grouping label %s (in none of %v)", label, names))
			}
		}
	}
	return bad
}

// Every metric, label and label value the alert rules and the dashboard
// name is served by a real server against a real slapd, once the metrics
// that appear with their first event have had it: TLS handshakes refused
// (ACME on, the unknown-address budget spent), a lookup while slapd is
// down (a transient failure) and one with the service account's password
// refused (a configuration failure).
func TestDeployMetricsExistSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	served := servedSeries{}
	c := &http.Client{Timeout: 10 * time.Second}
	lookup := func(s *serving, addr string) int {
		t.Helper()
		base := s.addrs["server.http_listen"]
		if base == "" {
			base = s.addrs["server.listen"]
		}
		code, _ := get(t, c, base+"/mail/config-v1.1.xml?emailaddress="+addr, "")
		return code
	}

	cfgFile := acmeHostedConfig(t, srv, "  unknown_per_minute: 1\n  unknown_burst: 2\n", "  http_listen: 127.0.0.1:0\n")
	s := startServe(t, []string{"--config", cfgFile}, "operations.listen", "server.http_listen")
	if code := lookup(s, "hanna@hosted.example"); code != 200 {
		t.Fatalf("hanna@hosted.example: %d", code)
	}
	// From an address of their own, so that HTTP lookups keep their budget.
	if n := sniFlood(t, strings.TrimPrefix(s.addrs["server.listen"], "https://"), "127.0.0.2", 10, 2); n != 0 {
		t.Errorf("%d handshakes with random names succeeded", n)
	}
	t.Logf("slapd before its stop: %d searches, %d binds", srv.SearchCount(), srv.BindCount())
	srv.Stop()
	lookup(s, "nobody-"+randomLabel()+"@hosted.example")
	_, body := scrape(t, s.addrs["operations.listen"])
	served.add(body)
	srv.Start()
	s.stop()

	// The service account's password refused: serve starts degraded and
	// lookups of the demo domain fail on the configuration.
	cfgFile = filepath.Join(t.TempDir(), "refused.yaml")
	writeFile(t, cfgFile, slapdConfigText(t, srv, slapdOptions{password: "not-" + ldaptest.ServicePassword}))
	s = startServe(t, []string{"--config", cfgFile, "--listen", "127.0.0.1:0", "--start-degraded"}, "operations.listen")
	lookup(s, "alice@example.com")
	_, body = scrape(t, s.addrs["operations.listen"])
	served.add(body)
	t.Logf("slapd since its restart: %d searches, %d binds", srv.SearchCount(), srv.BindCount())

	// The events happened (or the check below proves less than it says).
	for _, series := range []string{
		`mailbeacon_tls_sni_refused_total{reason="budget"}`,
		`mailbeacon_directory_failures_total{kind="transient"}`,
		`mailbeacon_directory_failures_total{kind="configuration"}`,
	} {
		name, rest, _ := strings.Cut(strings.TrimSuffix(series, `"}`), `{`)
		label, value, _ := strings.Cut(rest, `="`)
		if !served[name][label][value] {
			t.Errorf("no %s served: the test did not cause it", series)
		}
	}

	var exprs []string
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	exprs = append(exprs, dashboardQueries(t, readDashboard(t))...)
	used := map[string]bool{}
	for _, e := range exprs {
		for _, bad := range served.check(e) {
			t.Errorf("%s: not served: %s", strings.Join(strings.Fields(e), " "), bad)
		}
		for _, sel := range selectorRE.FindAllStringSubmatch(e, -1) {
			used[sel[1]] = true
		}
	}
	t.Logf("%d queries name %d metrics, all served", len(exprs), len(used))
}
