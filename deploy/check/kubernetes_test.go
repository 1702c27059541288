package check

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	kubeDir       = "../kubernetes/base"
	exampleDir    = "../kubernetes/overlays/example"
	monitoringDir = "../kubernetes/monitoring"
)

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// that monitoring/servicemonitor.yaml uses (its Go types would bring the
// operator's module in); decoded strictly, a misspelt field fails.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// built is what kustomize made of a directory, every object decoded
// strictly (an unknown or misspelt field, or a value of the wrong type, is
// an error) into the API type its apiVersion and kind name.
type built struct {
	deployment    *appsv1.Deployment
	services      []*corev1.Service
	configMap     *corev1.ConfigMap
	pdb           *policyv1.PodDisruptionBudget
	netpol        *networkingv1.NetworkPolicy
	monitor       *serviceMonitor
	secrets, kind []string
}

// kustomize builds dir as `kubectl apply -k dir` would, offline, with
// kustomize's Go API.
func kustomize(t *testing.T, dir string) built {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var b built
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		gvk := r.GetGvk()
		key := gvk.ApiVersion() + " " + gvk.Kind
		b.kind = append(b.kind, key+" "+r.GetName())
		var obj any
		switch key {
		case "apps/v1 Deployment":
			b.deployment = &appsv1.Deployment{}
			obj = b.deployment
		case "v1 Service":
			s := &corev1.Service{}
			b.services = append(b.services, s)
			obj = s
		case "v1 ConfigMap":
			b.configMap = &corev1.ConfigMap{}
			obj = b.configMap
		case "policy/v1 PodDisruptionBudget":
			b.pdb = &policyv1.PodDisruptionBudget{}
			obj = b.pdb
		case "networking.k8s.io/v1 NetworkPolicy":
			b.netpol = &networkingv1.NetworkPolicy{}
			obj = b.netpol
		case "monitoring.coreos.com/v1 ServiceMonitor":
			b.monitor = &serviceMonitor{}
			obj = b.monitor
		case "v1 Secret":
			b.secrets = append(b.secrets, r.GetName())
			obj = &corev1.Secret{}
		default:
			t.Errorf("%s: unexpected %s %s", dir, key, r.GetName())
			continue
		}
		if err := yaml.UnmarshalStrict(y, obj); err != nil {
			t.Errorf("%s: %s %s: %v", dir, key, r.GetName(), err)
		}
	}
	return b
}

// The base creates no Secret (applying it again must not overwrite the
// password), and every object it makes is one the checks below know.
func TestKubernetesBaseCreatesNoSecret(t *testing.T) {
	for _, dir := range []string{kubeDir, exampleDir} {
		b := kustomize(t, dir)
		if len(b.secrets) > 0 {
			t.Errorf("%s creates Secrets %v: the README has the operator create mailbeacon-ldap", dir, b.secrets)
		}
		if b.deployment == nil || len(b.services) != 1 || b.configMap == nil || b.pdb == nil || b.netpol == nil || b.monitor != nil {
			t.Errorf("%s: want a Deployment, one Service, a ConfigMap, a PDB and a NetworkPolicy (no ServiceMonitor), got %v", dir, b.kind)
		}
	}
}

func TestKubernetesBase(t *testing.T) {
	b := kustomize(t, kubeDir)
	checkBuilt(t, b)
	if got := b.netpol.Spec.Ingress[1].From[0].NamespaceSelector.MatchLabels; got["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("base NetworkPolicy: operations port from %v, want namespace monitoring", got)
	}
}

// The example overlay builds, and keeps every property of the base.
func TestKubernetesExampleOverlay(t *testing.T) {
	b := kustomize(t, exampleDir)
	checkBuilt(t, b)
	for _, o := range []metav1.Object{b.deployment, b.services[0], b.configMap, b.pdb, b.netpol} {
		if o.GetNamespace() != "mailbeacon" {
			t.Errorf("overlay: %s in namespace %q, want mailbeacon", o.GetName(), o.GetNamespace())
		}
	}
	if img := b.deployment.Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/mail/mailbeacon:1.0.0" {
		t.Errorf("overlay image %q", img)
	}
	if got := b.netpol.Spec.Ingress[1].From[0].NamespaceSelector.MatchLabels; got["kubernetes.io/metadata.name"] != "observability" {
		t.Errorf("overlay NetworkPolicy: operations port from %v, want namespace observability", got)
	}
	if cfg := b.configMap.Data["config.yaml"]; !strings.Contains(cfg, "trusted_proxies: [192.168.0.0/16]") {
		t.Errorf("overlay config.yaml: want its own trusted_proxies:\n%s", cfg)
	}
}

// monitoring/ builds on its own: a Service with the operations port that
// its ServiceMonitor selects, and that selects the mailbeacon pods.
func TestKubernetesServiceMonitor(t *testing.T) {
	m := kustomize(t, monitoringDir)
	base := kustomize(t, kubeDir)
	if m.monitor == nil || len(m.services) != 1 {
		t.Fatalf("monitoring: want a ServiceMonitor and a Service, got %v", m.kind)
	}
	svc := m.services[0]
	sel, err := metav1.LabelSelectorAsSelector(&m.monitor.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labelSet(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select Service %s %v", m.monitor.Spec.Selector, svc.Name, svc.Labels)
	}
	if sel.Matches(labelSet(base.services[0].Labels)) {
		t.Errorf("ServiceMonitor selects the client Service %s too", base.services[0].Name)
	}
	pod := base.deployment.Spec.Template.Labels
	for k, v := range svc.Spec.Selector {
		if pod[k] != v {
			t.Errorf("Service %s selector %s=%s selects no mailbeacon pod (%v)", svc.Name, k, v, pod)
		}
	}
	if len(m.monitor.Spec.Endpoints) != 1 || m.monitor.Spec.Endpoints[0].Port != "operations" || m.monitor.Spec.Endpoints[0].Path != "/metrics" ||
		len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "operations" || svc.Spec.Ports[0].TargetPort.String() != "operations" {
		t.Errorf("ServiceMonitor endpoints %+v, Service ports %+v: want /metrics on the port named operations", m.monitor.Spec.Endpoints, svc.Spec.Ports)
	}
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool              { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string            { return l[k] }
func (l labelSet) Lookup(k string) (string, bool) { v, ok := l[k]; return v, ok }

// checkBuilt checks what the base promises, in the base and any overlay.
func checkBuilt(t *testing.T, b built) {
	t.Helper()
	if b.deployment == nil || len(b.services) == 0 || b.configMap == nil || b.pdb == nil || b.netpol == nil {
		t.Fatalf("want a Deployment, a Service, a ConfigMap, a PDB and a NetworkPolicy, got %v", b.kind)
	}
	d := b.deployment
	pod := d.Spec.Template
	selects := func(what string, sel map[string]string) {
		t.Helper()
		if len(sel) == 0 {
			t.Errorf("%s selects every pod", what)
		}
		for k, v := range sel {
			if pod.Labels[k] != v {
				t.Errorf("%s selector %s=%s selects no mailbeacon pod (%v)", what, k, v, pod.Labels)
			}
		}
	}
	selects("Deployment", d.Spec.Selector.MatchLabels)
	svc := b.services[0]
	selects("Service", svc.Spec.Selector)
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, sp := range svc.Spec.Ports {
		if sp.TargetPort.String() != "http" {
			t.Errorf("Service port %s targets %q: only the client port belongs in it", sp.Name, sp.TargetPort.String())
		}
	}

	// Disruptions and placement: a drain leaves one replica, and the
	// replicas go to different nodes.
	if *d.Spec.Replicas < 2 {
		t.Errorf("replicas %d: want at least 2", *d.Spec.Replicas)
	}
	if b.pdb.Spec.MinAvailable == nil || b.pdb.Spec.MinAvailable.IntValue() < 1 || b.pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
		t.Errorf("PodDisruptionBudget minAvailable %v: want at least 1 and fewer than the %d replicas", b.pdb.Spec.MinAvailable, *d.Spec.Replicas)
	}
	selects("PodDisruptionBudget", b.pdb.Spec.Selector.MatchLabels)
	var spread bool
	for _, tc := range pod.Spec.TopologySpreadConstraints {
		if tc.TopologyKey == "kubernetes.io/hostname" && tc.WhenUnsatisfiable == corev1.DoNotSchedule && tc.MaxSkew == 1 {
			selects("topologySpreadConstraint", tc.LabelSelector.MatchLabels)
			spread = true
		}
	}
	if !spread {
		t.Errorf("no topologySpreadConstraint keeps replicas on different nodes: %+v", pod.Spec.TopologySpreadConstraints)
	}

	checkNetworkPolicy(t, b.netpol, pod, ports)

	// GOMEMLIMIT: Go's soft limit from the container's memory request,
	// in whole MiB, with room below the hard limit.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	gml := env["GOMEMLIMIT"].Value
	ref, ok := strings.CutSuffix(strings.TrimPrefix(gml, "$("), ")MiB")
	src := env[ref].ValueFrom
	if !strings.HasPrefix(gml, "$(") || !ok || src == nil || src.ResourceFieldRef == nil ||
		src.ResourceFieldRef.Resource != "requests.memory" || src.ResourceFieldRef.Divisor.String() != "1Mi" ||
		(src.ResourceFieldRef.ContainerName != "" && src.ResourceFieldRef.ContainerName != c.Name) ||
		slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == ref }) > slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" }) {
		t.Errorf("GOMEMLIMIT %q (from %+v): want $(VAR)MiB, VAR defined before it from this container's requests.memory with divisor 1Mi", gml, src)
	}
	req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
	if req.IsZero() || lim.IsZero() || float64(lim.Value()) < 1.15*float64(req.Value()) || req.Value()%(1<<20) != 0 {
		t.Errorf("memory request %s, limit %s: want whole MiB and the limit at least 15%% above (GOMEMLIMIT is the request)", req, lim)
	}

	checkProbes(t, c, ports)
	checkHardening(t, pod, c)
	checkFiles(t, b, pod, c)
}

// checkNetworkPolicy: the policy covers the mailbeacon pods' ingress, and
// admits exactly the client port from anywhere and the operations port
// from the monitoring namespace; nothing else.
func checkNetworkPolicy(t *testing.T, np *networkingv1.NetworkPolicy, pod corev1.PodTemplateSpec, ports map[string]int32) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil || sel.Empty() || !sel.Matches(labelSet(pod.Labels)) {
		t.Errorf("NetworkPolicy podSelector %v does not select the mailbeacon pods (%v)", np.Spec.PodSelector, pod.Labels)
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Errorf("NetworkPolicy policyTypes %v: want Ingress", np.Spec.PolicyTypes)
	}
	var got []string
	for _, r := range np.Spec.Ingress {
		from := "anywhere"
		switch {
		case len(r.From) == 0:
		case len(r.From) == 1 && r.From[0].PodSelector == nil && r.From[0].IPBlock == nil && r.From[0].NamespaceSelector != nil &&
			len(r.From[0].NamespaceSelector.MatchExpressions) == 0 && len(r.From[0].NamespaceSelector.MatchLabels) == 1 &&
			r.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "":
			from = "monitoring namespace"
		default:
			from = fmt.Sprintf("%+v", r.From)
		}
		if len(r.Ports) == 0 {
			got = append(got, "every port from "+from)
		}
		for _, p := range r.Ports {
			port := "?"
			if p.Port != nil {
				port = p.Port.String()
				if p.Port.Type == intstr.Int {
					for name, n := range ports {
						if n == p.Port.IntVal {
							port = name
						}
					}
				}
			}
			if _, ok := ports[port]; !ok || p.EndPort != nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
				port = fmt.Sprintf("%+v", p)
			}
			got = append(got, port+" from "+from)
		}
	}
	slices.Sort(got)
	want := []string{"http from anywhere", "operations from monitoring namespace"}
	if !slices.Equal(got, want) {
		t.Errorf("NetworkPolicy admits %q, want exactly %q", got, want)
	}
}

// checkProbes: readiness asks whether the process can answer (not whether
// the directory does), liveness whether it serves HTTP, on a port the
// container has.
func checkProbes(t *testing.T, c corev1.Container, ports map[string]int32) {
	t.Helper()
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz/serving"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", p.name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe asks %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if p.probe.HTTPGet.Port.String() != "operations" {
			t.Errorf("%s probe port %q, want the operations port (%v)", p.name, p.probe.HTTPGet.Port.String(), ports)
		}
		// operations.ready_timeout (2 s) bounds the directory check.
		if p.probe.TimeoutSeconds < 3 {
			t.Errorf("%s probe timeout %d s: want at least 3 (operations.ready_timeout is 2 s)", p.name, p.probe.TimeoutSeconds)
		}
	}
}

// checkHardening: the image's numeric non-root user, nothing to write.
func checkHardening(t *testing.T, pod corev1.PodTemplateSpec, c corev1.Container) {
	t.Helper()
	sc, psc := c.SecurityContext, pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 {
		t.Errorf("pod securityContext: want runAsNonRoot and runAsUser 65532 (the image's user): %+v", psc)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext: want readOnlyRootFilesystem, no privilege escalation, all capabilities dropped: %+v", sc)
	}
}

// checkFiles: the mounts put the ConfigMap's config.yaml where the args
// read it, the Secret's password where the configuration reads it, and
// state_dir on a writable emptyDir; the ports the configuration listens
// on are the container's.
func checkFiles(t *testing.T, b built, pod corev1.PodTemplateSpec, c corev1.Container) {
	t.Helper()
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm
	}
	files := map[string]string{} // path in the container -> "configmap:key" / "secret:NAME:key"
	for _, v := range pod.Spec.Volumes {
		vm, ok := mounts[v.Name]
		if !ok {
			t.Errorf("volume %s is not mounted", v.Name)
			continue
		}
		dir := vm.MountPath
		switch {
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != b.configMap.Name {
				t.Errorf("volume %s: ConfigMap %q, want %q (kustomize's name)", v.Name, v.ConfigMap.Name, b.configMap.Name)
			}
			for _, it := range v.ConfigMap.Items {
				if _, ok := b.configMap.Data[it.Key]; !ok {
					t.Errorf("volume %s: ConfigMap has no key %q", v.Name, it.Key)
				}
				files[dir+"/"+it.Path] = "configmap:" + it.Key
			}
		case v.Secret != nil:
			for _, it := range v.Secret.Items {
				files[dir+"/"+it.Path] = "secret:" + v.Secret.SecretName + ":" + it.Key
			}
		case v.EmptyDir != nil:
			if vm.ReadOnly {
				t.Errorf("emptyDir %s is mounted read-only", v.Name)
			}
			files[dir] = "emptydir"
		default:
			t.Errorf("volume %s: unexpected source", v.Name)
		}
	}
	if i := slices.Index(c.Args, "--config"); i < 0 || i+1 >= len(c.Args) || files[c.Args[i+1]] != "configmap:config.yaml" {
		t.Errorf("args %v: --config must name the mounted config.yaml (mounted: %v)", c.Args, files)
	}
	var cfg struct {
		Server     struct{ Listen string } `json:"server"`
		Operations struct{ Listen string } `json:"operations"`
		StateDir   string                  `json:"state_dir"`
		LDAP       struct {
			BindPasswordFile string `json:"bind_password_file"`
		} `json:"ldap"`
	}
	if err := yaml.Unmarshal([]byte(b.configMap.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	if files[cfg.LDAP.BindPasswordFile] != "secret:mailbeacon-ldap:ldap-password" {
		t.Errorf("config.yaml reads the password from %q; the Secret mailbeacon-ldap's key ldap-password is mounted as %v", cfg.LDAP.BindPasswordFile, files)
	}
	// state_dir outlives container restarts, so a crash loop does not
	// send refused credentials again.
	if cfg.StateDir == "" || files[cfg.StateDir] != "emptydir" {
		t.Errorf("config.yaml's state_dir %q must be an emptyDir the container mounts (mounted: %v)", cfg.StateDir, files)
	}
	ports := map[string]string{}
	for _, p := range c.Ports {
		ports[p.Name] = fmt.Sprintf(":%d", p.ContainerPort)
	}
	if i := slices.Index(c.Args, "--listen"); i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != ports["http"] || cfg.Server.Listen != ports["http"] {
		t.Errorf("args %v, server.listen %q: want the container's http port %s", c.Args, cfg.Server.Listen, ports["http"])
	}
	if cfg.Operations.Listen != ports["operations"] || ports["operations"] != ":9734" {
		t.Errorf("operations.listen %q: want the container's operations port %s, 9734 (the default port)", cfg.Operations.Listen, ports["operations"])
	}
}
