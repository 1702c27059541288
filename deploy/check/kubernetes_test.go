package check

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const kubeDir = "../kubernetes"

// manifests decodes every file in deploy/kubernetes strictly (an unknown
// or misspelt field, or a value of the wrong type, is an error) into the
// API type its apiVersion and kind name.
type manifests struct {
	deployment *appsv1.Deployment
	service    *corev1.Service
	configMap  *corev1.ConfigMap
	secret     *corev1.Secret
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", kubeDir, err)
	}
	var m manifests
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(b, &meta); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			m.deployment = &appsv1.Deployment{}
			obj = m.deployment
		case "v1 Service":
			m.service = &corev1.Service{}
			obj = m.service
		case "v1 ConfigMap":
			m.configMap = &corev1.ConfigMap{}
			obj = m.configMap
		case "v1 Secret":
			m.secret = &corev1.Secret{}
			obj = m.secret
		default:
			t.Fatalf("%s: unexpected %s %s", f, meta.APIVersion, meta.Kind)
		}
		if err := yaml.UnmarshalStrict(b, obj); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if strings.Contains(string(b), "\n---") {
			t.Errorf("%s: one object per file", f)
		}
	}
	if m.deployment == nil || m.service == nil || m.configMap == nil || m.secret == nil {
		t.Fatalf("want a Deployment, a Service, a ConfigMap and a Secret: %+v", m)
	}
	return m
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	d := m.deployment
	pod := d.Spec.Template
	for k, v := range d.Spec.Selector.MatchLabels {
		if pod.Labels[k] != v {
			t.Errorf("Deployment selector %s=%s does not select its own pods (%v)", k, v, pod.Labels)
		}
	}
	for k, v := range m.service.Spec.Selector {
		if pod.Labels[k] != v {
			t.Errorf("Service selector %s=%s selects no mailbeacon pod (%v)", k, v, pod.Labels)
		}
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, sp := range m.service.Spec.Ports {
		if _, ok := ports[sp.TargetPort.String()]; !ok {
			t.Errorf("Service port %s targets %q, which the container does not name (%v)", sp.Name, sp.TargetPort.String(), ports)
		}
	}
	// The probes the issue asks for, on a port the container has.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", p.name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe asks %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if _, ok := ports[p.probe.HTTPGet.Port.String()]; !ok {
			t.Errorf("%s probe port %q is not a container port (%v)", p.name, p.probe.HTTPGet.Port.String(), ports)
		}
	}
	// The hardening the image allows: its numeric non-root user, nothing to write.
	sc, psc := c.SecurityContext, pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 {
		t.Errorf("pod securityContext: want runAsNonRoot and runAsUser 65532 (the image's user): %+v", psc)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext: want readOnlyRootFilesystem, no privilege escalation, all capabilities dropped: %+v", sc)
	}
	// The mounts put the ConfigMap's config.yaml where the args read it,
	// and the Secret's password where the configuration reads it.
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm.MountPath
	}
	files := map[string]string{} // path in the container -> "configmap:key" / "secret:key"
	for _, v := range pod.Spec.Volumes {
		dir, ok := mounts[v.Name]
		if !ok {
			t.Errorf("volume %s is not mounted", v.Name)
			continue
		}
		switch {
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != m.configMap.Name {
				t.Errorf("volume %s: ConfigMap %q, want %q", v.Name, v.ConfigMap.Name, m.configMap.Name)
			}
			for _, it := range v.ConfigMap.Items {
				if _, ok := m.configMap.Data[it.Key]; !ok {
					t.Errorf("volume %s: ConfigMap has no key %q", v.Name, it.Key)
				}
				files[dir+"/"+it.Path] = "configmap:" + it.Key
			}
		case v.Secret != nil:
			if v.Secret.SecretName != m.secret.Name {
				t.Errorf("volume %s: Secret %q, want %q", v.Name, v.Secret.SecretName, m.secret.Name)
			}
			for _, it := range v.Secret.Items {
				if _, ok := m.secret.StringData[it.Key]; !ok {
					t.Errorf("volume %s: Secret has no key %q", v.Name, it.Key)
				}
				files[dir+"/"+it.Path] = "secret:" + it.Key
			}
		case v.EmptyDir != nil:
			files[dir] = "emptydir"
		default:
			t.Errorf("volume %s: unexpected source", v.Name)
		}
	}
	if i := slices.Index(c.Args, "--config"); i < 0 || i+1 >= len(c.Args) || files[c.Args[i+1]] != "configmap:config.yaml" {
		t.Errorf("args %v: --config must name the mounted config.yaml (mounted: %v)", c.Args, files)
	}
	cfg := m.configMap.Data["config.yaml"]
	var pwFile string
	for _, l := range strings.Split(cfg, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "bind_password_file:"); ok {
			pwFile = strings.TrimSpace(v)
		}
	}
	if files[pwFile] != "secret:ldap-password" {
		t.Errorf("config.yaml reads the password from %q; the Secret is mounted as %v", pwFile, files)
	}
	// state_dir is a writable emptyDir (it outlives container restarts),
	// so a crash loop does not send refused credentials again.
	var stateDir string
	for _, l := range strings.Split(cfg, "\n") {
		if v, ok := strings.CutPrefix(l, "state_dir:"); ok {
			stateDir = strings.TrimSpace(v)
		}
	}
	if stateDir == "" || files[stateDir] != "emptydir" {
		t.Errorf("config.yaml's state_dir %q must be an emptyDir the container mounts (mounted: %v)", stateDir, files)
	}
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == stateDir && vm.ReadOnly {
			t.Errorf("the state directory %s is mounted read-only", stateDir)
		}
	}
	if !strings.Contains(cfg, "listen: :9090") || ports["operations"] != 9090 || !strings.Contains(cfg, "listen: :8080") || ports["http"] != 8080 {
		t.Errorf("config.yaml's listen and operations.listen must be the container's http (8080) and operations (9090) ports")
	}
}
