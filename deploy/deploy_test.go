package deploy_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	k8syaml "sigs.k8s.io/yaml"
)

// manifests are the decoded objects of deploy/kubernetes, or of the chart's rendered templates, by kind.
type manifests struct {
	deployments     []appsv1.Deployment
	services        []corev1.Service
	pdbs            []policyv1.PodDisruptionBudget
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	jobs            []batchv1.Job
	serviceMonitors []monitoringv1.ServiceMonitor
	rules           []monitoringv1.PrometheusRule
	files           []string
}

// decodeManifests strictly decodes every document of every YAML file in deploy/kubernetes (except the
// kustomization) into its Kubernetes API type: an unknown or misspelt field fails.
func decodeManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var m manifests
	for _, f := range files {
		m.files = append(m.files, filepath.Base(f))
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m.add(t, f, b)
	}
	return m
}

// add strictly decodes every document of b (from the file what) into its Kubernetes API type, skipping
// documents with nothing but comments. An unknown kind or field fails.
func (m *manifests) add(t *testing.T, what string, b []byte) {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("%s document %d: %v", what, i, err)
		}
		var tm metav1.TypeMeta
		if err := k8syaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s document %d: %v", what, i, err)
		}
		var into any
		switch tm.APIVersion + " " + tm.Kind {
		case " ":
			var v any
			if err := k8syaml.Unmarshal(doc, &v); err != nil || v != nil {
				t.Fatalf("%s document %d: no apiVersion and kind: %s", what, i, doc)
			}
			continue
		case "apps/v1 Deployment":
			into = grow(&m.deployments)
		case "v1 Service":
			into = grow(&m.services)
		case "policy/v1 PodDisruptionBudget":
			into = grow(&m.pdbs)
		case "v1 ConfigMap":
			into = grow(&m.configMaps)
		case "v1 Secret":
			into = grow(&m.secrets)
		case "batch/v1 Job":
			into = grow(&m.jobs)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			into = grow(&m.serviceMonitors)
		case "monitoring.coreos.com/v1 PrometheusRule":
			into = grow(&m.rules)
		default:
			t.Fatalf("%s document %d: unexpected %s %s", what, i, tm.APIVersion, tm.Kind)
		}
		if err := k8syaml.UnmarshalStrict(doc, into); err != nil {
			t.Fatalf("%s document %d (%s): %v", what, i, tm.Kind, err)
		}
	}
}

// grow appends a zero object to *s and returns a pointer to it.
func grow[T any](s *[]T) *T {
	*s = append(*s, *new(T))
	return &(*s)[len(*s)-1]
}

// secretRef is the Secret of the bridge's own secrets that the Deployments read, and its keys.
type secretRef struct {
	name string
	keys map[string]string
}

// wantRoles are the role groups of deploy/kubernetes, and of the chart rendered as release "bridge": each
// Deployment's name and its BRIDGE_ROLES.
var wantRoles = map[string]string{"bridge-ingest": "ingest", "bridge-workers": "verify,reconcile,submit"}

func TestKubernetesManifests(t *testing.T) {
	m := decodeManifests(t)
	if len(m.secrets) != 1 {
		t.Fatalf("%d secrets, want 1", len(m.secrets))
	}
	checkBridge(t, m, secretRef{name: m.secrets[0].Name, keys: m.secrets[0].StringData})
	if len(m.services) != 1 {
		t.Errorf("%d services, want 1", len(m.services))
	}

	// The kustomization applies every manifest but the example Secret.
	var k struct {
		Resources []string `yaml:"resources"`
	}
	b, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	for _, f := range m.files {
		want := f != "kustomization.yaml" && f != "secret.example.yaml"
		if slices.Contains(k.Resources, f) != want {
			t.Errorf("kustomization.yaml resources %v: %s listed = %v, want %v", k.Resources, f, !want, want)
		}
	}
}

// checkBridge checks what deploy/kubernetes and the chart have in common: the config map, the provision
// Job, each Deployment of wantRoles (environment, secrets, NATS user, probes, limits, shutdown, security,
// a PodDisruptionBudget) and the ingest Service.
func checkBridge(t *testing.T, m manifests, secret secretRef) {
	t.Helper()
	if len(m.deployments) != len(wantRoles) {
		t.Fatalf("%d deployments, want %d", len(m.deployments), len(wantRoles))
	}
	if len(m.configMaps) != 1 {
		t.Fatalf("%d config maps, want 1", len(m.configMaps))
	}
	cm := m.configMaps[0]
	if got := cm.Data["BRIDGE_PROVISION"]; got != "false" {
		t.Errorf("BRIDGE_PROVISION = %q, want false: the processes' users may not create streams; the Job does", got)
	}
	users := helmUsers(t)
	for _, j := range m.jobs {
		checkNATSUser(t, j.Name, j.Spec.Template.Spec.Containers[0], users)
	}
	if len(m.jobs) != 1 || m.jobs[0].Spec.Template.Spec.Containers[0].Args[0] != "provision" {
		t.Errorf("%d jobs, want the one that runs bridge provision", len(m.jobs))
	}
	if got := cm.Data["BRIDGE_REPLICAS"]; got != "3" {
		t.Errorf("BRIDGE_REPLICAS = %q, want 3", got)
	}
	known := knownVariables(t)
	for k := range cm.Data {
		if !known[k] {
			t.Errorf("config map sets %s, which docs/CONFIG.md does not list", k)
		}
	}
	for _, d := range m.deployments {
		t.Run(d.Name, func(t *testing.T) { checkDeployment(t, m, d, secret) })
	}
	checkIngestService(t, m)
}

// knownVariables are the variables a manifest may set: docs/CONFIG.md's, and two of others.
func knownVariables(t *testing.T) map[string]bool {
	t.Helper()
	known := configVariables(t)
	known["GOMEMLIMIT"] = true    // the Go runtime's own; bridge run sets it from the container's limit otherwise
	known["NATS_PASSWORD"] = true // the Secret's password, which BRIDGE_NATS_URL expands
	return known
}

// checkDeployment checks one Deployment of wantRoles: see checkBridge.
func checkDeployment(t *testing.T, m manifests, d appsv1.Deployment, secret secretRef) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	if !sel.Matches(podLabels) {
		t.Errorf("selector %s does not match the pod labels %v", sel, podLabels)
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(d.Spec.Template.Spec.Containers))
	}
	c := d.Spec.Template.Spec.Containers[0]
	known := knownVariables(t)
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
		if !known[e.Name] {
			t.Errorf("sets %s, which docs/CONFIG.md does not list", e.Name)
		}
	}
	// bridge run gives the runtime 90% of this limit as GOMEMLIMIT (cmd/bridge's image test), so that it
	// collects before the kernel kills.
	if lim := c.Resources.Limits.Memory(); lim.IsZero() {
		t.Errorf("no memory limit: want one, which the bridge's GOMEMLIMIT follows")
	}
	if d.Name == "bridge-ingest" {
		delay, err := time.ParseDuration(env["BRIDGE_SHUTDOWN_DELAY"].Value)
		grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds
		// The listener's drain (10 s) and the NATS drain (10 s) follow the delay.
		if err != nil || delay < 5*time.Second || grace == nil || time.Duration(*grace)*time.Second < delay+25*time.Second {
			t.Errorf("BRIDGE_SHUTDOWN_DELAY %q, terminationGracePeriodSeconds %v: want a delay of at least 5s and a grace covering it plus 25s",
				env["BRIDGE_SHUTDOWN_DELAY"].Value, grace)
		}
	}
	checkNATSUser(t, d.Name, c, helmUsers(t))
	if got := env["BRIDGE_ROLES"].Value; got != wantRoles[d.Name] {
		t.Errorf("BRIDGE_ROLES = %q, want %q", got, wantRoles[d.Name])
	}
	checkSecretEnv(t, env, secret)
	if _, ok := env["BRIDGE_WEBHOOK_TOKEN"]; !ok {
		t.Error("BRIDGE_WEBHOOK_TOKEN not set: ingest checks it and submit puts it in webhook_url")
	}
	if strings.Contains(wantRoles[d.Name], "submit") {
		if _, ok := env["BRIDGE_API_KEY"]; !ok {
			t.Error("BRIDGE_API_KEY not set for roles that call the upstream")
		}
	}
	cm := m.configMaps[0]
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != cm.Name {
		t.Errorf("envFrom %+v, want config map %s", c.EnvFrom, cm.Name)
	}
	checkContainer(t, c)
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		d.Spec.Template.Spec.SecurityContext == nil || !*d.Spec.Template.Spec.SecurityContext.RunAsNonRoot {
		t.Error("want a non-root pod with a read-only root filesystem (the image is FROM scratch and runs as uid 65532)")
	}
	pdbs := 0
	for _, p := range m.pdbs {
		ps, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && ps.Matches(podLabels) {
			pdbs++
			if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
				t.Errorf("PodDisruptionBudget %s has no minAvailable or maxUnavailable", p.Name)
			}
		}
	}
	if pdbs != 1 {
		t.Errorf("%d PodDisruptionBudgets select its pods, want 1", pdbs)
	}
}

// checkSecretEnv checks that the bridge's secrets are read from the Secret, by keys it has.
func checkSecretEnv(t *testing.T, env map[string]corev1.EnvVar, secret secretRef) {
	t.Helper()
	for _, name := range []string{"BRIDGE_API_KEY", "BRIDGE_WEBHOOK_TOKEN", "BRIDGE_WEBHOOK_SECRET"} {
		e, ok := env[name]
		if !ok {
			continue
		}
		ref := e.ValueFrom
		if e.Value != "" || ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != secret.name {
			t.Errorf("%s is not read from Secret %s", name, secret.name)
			continue
		}
		if _, ok := secret.keys[ref.SecretKeyRef.Key]; !ok {
			t.Errorf("%s reads key %q, which Secret %s does not have", name, ref.SecretKeyRef.Key, secret.name)
		}
	}
}

// checkContainer checks the probes and the port of a bridge container.
func checkContainer(t *testing.T, c corev1.Container) {
	t.Helper()
	probe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe %+v, want GET %s on port http", what, p, path)
		}
	}
	probe("liveness", c.LivenessProbe, "/healthz")
	probe("readiness", c.ReadinessProbe, "/readyz")
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("ports %+v, want http 8080", c.Ports)
	}
}

// checkIngestService checks the Service bridge-ingest: port 8080 to the named port of the ingest pods only.
func checkIngestService(t *testing.T, m manifests) {
	t.Helper()
	i := slices.IndexFunc(m.services, func(s corev1.Service) bool { return s.Name == "bridge-ingest" })
	if i < 0 {
		t.Fatal("no Service bridge-ingest")
	}
	svc := m.services[i]
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("service ports %+v, want 8080 to http", svc.Spec.Ports)
	}
	for _, d := range m.deployments {
		selected := labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels))
		if selected != (d.Name == "bridge-ingest") {
			t.Errorf("service %s selects %s: %v", svc.Name, d.Name, selected)
		}
	}
}

// configVariables are the BRIDGE_* variables of docs/CONFIG.md (generated from the code, and checked by
// the bridge package's TestConfigDoc).
func configVariables(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(BRIDGE_[A-Z0-9_]+)`").FindAllStringSubmatch(string(b), -1) {
		vars[m[1]] = true
	}
	if len(vars) < 10 {
		t.Fatalf("found only %d variables in docs/CONFIG.md", len(vars))
	}
	return vars
}

// helmUsers reads the users of deploy/helm/nats-values.yaml: each user's name and the Secret key of its
// password.
func helmUsers(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("helm/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config struct {
			Merge struct {
				Authorization struct {
					Users []struct {
						User     string `yaml:"user"`
						Password string `yaml:"password"`
					} `yaml:"users"`
				} `yaml:"authorization"`
			} `yaml:"merge"`
		} `yaml:"config"`
		Container struct {
			Env map[string]struct {
				ValueFrom struct {
					SecretKeyRef struct {
						Name string `yaml:"name"`
						Key  string `yaml:"key"`
					} `yaml:"secretKeyRef"`
				} `yaml:"valueFrom"`
			} `yaml:"env"`
		} `yaml:"container"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("helm/nats-values.yaml: %v", err)
	}
	users := map[string]string{}
	for _, u := range v.Config.Merge.Authorization.Users {
		name := strings.TrimSuffix(strings.TrimPrefix(u.Password, "<< $"), " >>")
		ref := v.Container.Env[name].ValueFrom.SecretKeyRef
		if ref.Name != "bridge-nats-users" || ref.Key == "" {
			t.Errorf("user %s: password %q is not read from Secret bridge-nats-users", u.User, u.Password)
		}
		users[u.User] = ref.Key
	}
	return users
}

// checkNATSUser checks that c connects as a user of the NATS chart's values, with that user's password
// from the Secret, and never in clear in the manifest.
func checkNATSUser(t *testing.T, what string, c corev1.Container, users map[string]string) {
	t.Helper()
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	url := env["BRIDGE_NATS_URL"].Value
	user, ok := strings.CutPrefix(url, "nats://")
	user, _, _ = strings.Cut(user, ":")
	key, known := users[user]
	if !ok || !known || url != "nats://"+user+":$(NATS_PASSWORD)@nats:4222" {
		t.Errorf("%s: BRIDGE_NATS_URL %q, want nats://<a user of helm/nats-values.yaml>:$(NATS_PASSWORD)@nats:4222", what, url)
		return
	}
	ref := env["NATS_PASSWORD"].ValueFrom
	if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != "bridge-nats-users" || ref.SecretKeyRef.Key != key {
		t.Errorf("%s: NATS_PASSWORD %+v, want Secret bridge-nats-users key %s (user %s)", what, ref, key, user)
	}
}
