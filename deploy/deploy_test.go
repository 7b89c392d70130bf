package deploy_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8syaml "sigs.k8s.io/yaml"
)

// manifests are the decoded objects of deploy/kubernetes, by kind.
type manifests struct {
	deployments []appsv1.Deployment
	services    []corev1.Service
	pdbs        []policyv1.PodDisruptionBudget
	configMaps  []corev1.ConfigMap
	secrets     []corev1.Secret
	jobs        []batchv1.Job
	files       []string
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
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			var tm metav1.TypeMeta
			if err := k8syaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var into any
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				m.deployments = append(m.deployments, appsv1.Deployment{})
				into = &m.deployments[len(m.deployments)-1]
			case "v1 Service":
				m.services = append(m.services, corev1.Service{})
				into = &m.services[len(m.services)-1]
			case "policy/v1 PodDisruptionBudget":
				m.pdbs = append(m.pdbs, policyv1.PodDisruptionBudget{})
				into = &m.pdbs[len(m.pdbs)-1]
			case "v1 ConfigMap":
				m.configMaps = append(m.configMaps, corev1.ConfigMap{})
				into = &m.configMaps[len(m.configMaps)-1]
			case "v1 Secret":
				m.secrets = append(m.secrets, corev1.Secret{})
				into = &m.secrets[len(m.secrets)-1]
			case "batch/v1 Job":
				m.jobs = append(m.jobs, batchv1.Job{})
				into = &m.jobs[len(m.jobs)-1]
			default:
				t.Fatalf("%s document %d: unexpected %s %s", f, i, tm.APIVersion, tm.Kind)
			}
			if err := k8syaml.UnmarshalStrict(doc, into); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i, tm.Kind, err)
			}
		}
	}
	return m
}

func TestKubernetesManifests(t *testing.T) {
	m := decodeManifests(t)
	wantRoles := map[string]string{"bridge-ingest": "ingest", "bridge-workers": "verify,reconcile,submit"}
	if len(m.deployments) != len(wantRoles) {
		t.Fatalf("%d deployments, want %d", len(m.deployments), len(wantRoles))
	}
	if len(m.configMaps) != 1 || len(m.secrets) != 1 {
		t.Fatalf("%d config maps and %d secrets, want 1 and 1", len(m.configMaps), len(m.secrets))
	}
	cm, secret := m.configMaps[0], m.secrets[0]
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
	known := configVariables(t)
	known["GOMEMLIMIT"] = true    // the Go runtime's own, set from the container's memory limit
	known["NATS_PASSWORD"] = true // the Secret's password, which BRIDGE_NATS_URL expands
	for k := range cm.Data {
		if !known[k] {
			t.Errorf("config map sets %s, which docs/CONFIG.md does not list", k)
		}
	}

	for _, d := range m.deployments {
		t.Run(d.Name, func(t *testing.T) {
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
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				env[e.Name] = e
				if !known[e.Name] {
					t.Errorf("sets %s, which docs/CONFIG.md does not list", e.Name)
				}
			}
			if lim := c.Resources.Limits.Memory(); lim.IsZero() || env["GOMEMLIMIT"].Value == "" {
				t.Errorf("memory limit %v, GOMEMLIMIT %q: want both, so the runtime collects before the kernel kills",
					lim, env["GOMEMLIMIT"].Value)
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
			checkNATSUser(t, d.Name, c, users)
			if got := env["BRIDGE_ROLES"].Value; got != wantRoles[d.Name] {
				t.Errorf("BRIDGE_ROLES = %q, want %q", got, wantRoles[d.Name])
			}
			for _, name := range []string{"BRIDGE_API_KEY", "BRIDGE_WEBHOOK_TOKEN", "BRIDGE_WEBHOOK_SECRET"} {
				e, ok := env[name]
				if !ok {
					continue
				}
				ref := e.ValueFrom
				if e.Value != "" || ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != secret.Name {
					t.Errorf("%s is not read from Secret %s", name, secret.Name)
					continue
				}
				if _, ok := secret.StringData[ref.SecretKeyRef.Key]; !ok {
					t.Errorf("%s reads key %q, which Secret %s does not have", name, ref.SecretKeyRef.Key, secret.Name)
				}
			}
			if _, ok := env["BRIDGE_WEBHOOK_TOKEN"]; !ok {
				t.Error("BRIDGE_WEBHOOK_TOKEN not set: ingest checks it and submit puts it in webhook_url")
			}
			if strings.Contains(wantRoles[d.Name], "submit") {
				if _, ok := env["BRIDGE_API_KEY"]; !ok {
					t.Error("BRIDGE_API_KEY not set for roles that call the upstream")
				}
			}
			if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != cm.Name {
				t.Errorf("envFrom %+v, want config map %s", c.EnvFrom, cm.Name)
			}
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
		})
	}

	// The ingest Service: port 8080 to the named port of the ingest pods only.
	if len(m.services) != 1 {
		t.Fatalf("%d services, want 1", len(m.services))
	}
	svc := m.services[0]
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("service ports %+v, want 8080 to http", svc.Spec.Ports)
	}
	for _, d := range m.deployments {
		selected := labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels))
		if selected != (d.Name == "bridge-ingest") {
			t.Errorf("service %s selects %s: %v", svc.Name, d.Name, selected)
		}
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
