//go:build helm

package deploy_test

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	chartcommon "helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8syaml "sigs.k8s.io/yaml"
)

// chartDir is the bridge's Helm chart.
const chartDir = "helm/bridge"

// kubeVersion is the cluster the chart is rendered and linted for: Helm's default in a test build is
// v1.20, below the chart's kubeVersion.
const kubeVersion = "v1.34.0"

// loadChart loads the chart with Helm's own loader.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatalf("load %s: %v", chartDir, err)
	}
	return ch
}

// render renders the chart as `helm template RELEASE` does, with Helm's engine (strict: a template
// that reads a value values.yaml lacks fails) and its values schema, and returns each template's output.
func render(t *testing.T, release string, overrides map[string]any) (map[string]string, error) {
	t.Helper()
	ch := loadChart(t)
	caps := chartcommon.DefaultCapabilities.Copy()
	kv, err := chartcommon.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	caps.KubeVersion = *kv
	vals, err := chartutil.ToRenderValues(ch, overrides,
		chartcommon.ReleaseOptions{Name: release, Namespace: "moderation", Revision: 1, IsInstall: true}, caps)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(ch, vals)
}

// renderObjects renders the chart and decodes every object strictly into its Kubernetes API type.
func renderObjects(t *testing.T, release string, overrides map[string]any) manifests {
	t.Helper()
	out, err := render(t, release, overrides)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	var m manifests
	for _, name := range slices.Sorted(maps.Keys(out)) {
		if strings.HasSuffix(name, "NOTES.txt") {
			continue
		}
		m.files = append(m.files, name)
		m.add(t, name, []byte(out[name]))
	}
	return m
}

// TestHelmChart renders the chart with its default values as release "bridge", whose objects then have
// the names of deploy/kubernetes, and holds it to the manifests' checks: the same Deployments, roles,
// NATS users, secrets (from the Secret bridge-secrets, by the keys of secret.example.yaml), probes,
// limits, shutdown delay, security, PodDisruptionBudgets, ingest Service and provision Job.
func TestHelmChart(t *testing.T) {
	m := renderObjects(t, "bridge", nil)
	example := decodeManifests(t).secrets[0]
	if len(m.secrets) != 0 {
		t.Errorf("the chart makes %d Secrets, want none: secrets come from Secrets the operator creates", len(m.secrets))
	}
	checkBridge(t, m, secretRef{name: example.Name, keys: example.StringData})
	if len(m.services) != 1 || len(m.serviceMonitors) != 0 {
		t.Errorf("%d Services and %d ServiceMonitors, want the ingest Service alone while serviceMonitor.enabled is false",
			len(m.services), len(m.serviceMonitors))
	}
	// The provision Job runs before the ConfigMap exists (a pre-install hook): it carries the same settings.
	job := m.jobs[0]
	if job.Annotations["helm.sh/hook"] != "pre-install,pre-upgrade" {
		t.Errorf("provision Job hook %q, want pre-install,pre-upgrade", job.Annotations["helm.sh/hook"])
	}
	env := map[string]string{}
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	for k, v := range m.configMaps[0].Data {
		if env[k] != v {
			t.Errorf("provision Job: %s = %q, want the ConfigMap's %q", k, env[k], v)
		}
	}

	// Another release name: every object is named after it, and no selector reaches another release's pods.
	other := renderObjects(t, "mod", nil)
	for _, d := range other.deployments {
		if !strings.HasPrefix(d.Name, "mod-bridge-") || d.Spec.Selector.MatchLabels["app.kubernetes.io/instance"] != "mod" {
			t.Errorf("release mod: Deployment %s selects %v", d.Name, d.Spec.Selector.MatchLabels)
		}
	}
}

// TestHelmChartImage: the chart runs the image scripts/images.sh builds, at the chart's appVersion by
// default, and deploy/kubernetes pins the same tag: never latest.
func TestHelmChartImage(t *testing.T) {
	ch := loadChart(t)
	want := "evershield/bridge:" + ch.Metadata.AppVersion
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(ch.Metadata.AppVersion) || ch.Metadata.Version != ch.Metadata.AppVersion {
		t.Errorf("Chart.yaml version %q, appVersion %q: want one release's X.Y.Z in both", ch.Metadata.Version, ch.Metadata.AppVersion)
	}
	images, err := os.ReadFile("../scripts/images.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(images), "evershield/bridge:$TAG") {
		t.Error("scripts/images.sh no longer names evershield/bridge:$TAG: the chart's image.repository follows it")
	}
	kube := decodeManifests(t)
	for what, m := range map[string]manifests{"chart": renderObjects(t, "bridge", nil), "deploy/kubernetes": kube} {
		for _, spec := range podSpecs(m) {
			for _, c := range spec.Containers {
				if c.Image != want {
					t.Errorf("%s: container %s runs %s, want %s", what, c.Name, c.Image, want)
				}
			}
		}
	}
	m := renderObjects(t, "bridge", map[string]any{"image": map[string]any{"tag": "0.9.1-rc.1"}})
	if got := m.deployments[0].Spec.Template.Spec.Containers[0].Image; got != "evershield/bridge:0.9.1-rc.1" {
		t.Errorf("image.tag 0.9.1-rc.1: image %s", got)
	}
	digest := "sha256:" + strings.Repeat("ab", 32)
	m = renderObjects(t, "bridge", map[string]any{"image": map[string]any{"digest": digest}})
	if got := m.jobs[0].Spec.Template.Spec.Containers[0].Image; got != "evershield/bridge@"+digest {
		t.Errorf("image.digest: image %s", got)
	}
}

// podSpecs are the pod templates of the Deployments and Jobs of m.
func podSpecs(m manifests) []corev1.PodSpec {
	var specs []corev1.PodSpec
	for _, d := range m.deployments {
		specs = append(specs, d.Spec.Template.Spec)
	}
	for _, j := range m.jobs {
		specs = append(specs, j.Spec.Template.Spec)
	}
	return specs
}

// TestHelmChartServiceMonitor: a ServiceMonitor (monitoring.coreos.com/v1, decoded into the Prometheus
// Operator's own type) appears only when serviceMonitor.enabled is set, and then scrapes /metrics on the
// named port of every bridge pod of the release through the Services it selects.
func TestHelmChartServiceMonitor(t *testing.T) {
	m := renderObjects(t, "bridge", map[string]any{"serviceMonitor": map[string]any{
		"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}}})
	if len(m.serviceMonitors) != 1 {
		t.Fatalf("%d ServiceMonitors with serviceMonitor.enabled, want 1", len(m.serviceMonitors))
	}
	sm := m.serviceMonitors[0]
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v: want serviceMonitor.labels among them", sm.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http" ||
		sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, want /metrics on port http", sm.Spec.Endpoints)
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Fatalf("ServiceMonitor selector %v: %v", sm.Spec.Selector, err)
	}
	// Every Deployment's pods sit behind a selected Service with a port named http.
	for _, d := range m.deployments {
		scraped := slices.ContainsFunc(m.services, func(s corev1.Service) bool {
			return sel.Matches(labels.Set(s.Labels)) &&
				labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) &&
				slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "http" })
		})
		if !scraped {
			t.Errorf("no Service the ServiceMonitor selects fronts the pods of %s on a port named http", d.Name)
		}
	}
	checkIngestService(t, m)
}

// TestHelmChartPrometheusRule renders the alert rules as a PrometheusRule: every alert of
// deploy/prometheus/alerts.yml, by name and expression, with the chart's labels and prometheusRule.labels;
// none without prometheusRule.enabled. The ServiceMonitor names the job "bridge", which BridgeDown reads.
func TestHelmChartPrometheusRule(t *testing.T) {
	if m := renderObjects(t, "bridge", nil); len(m.rules) != 0 {
		t.Fatalf("%d PrometheusRules by default, want 0", len(m.rules))
	}
	m := renderObjects(t, "bridge", map[string]any{
		"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
		"serviceMonitor": map[string]any{"enabled": true}})
	if len(m.rules) != 1 {
		t.Fatalf("%d PrometheusRules with prometheusRule.enabled, want 1", len(m.rules))
	}
	r := m.rules[0]
	if r.Labels["release"] != "kube-prometheus-stack" || r.Labels["app.kubernetes.io/name"] != "bridge" {
		t.Errorf("PrometheusRule labels %v: want the chart's and prometheusRule.labels", r.Labels)
	}
	got := map[string]string{}
	for _, g := range r.Spec.Groups {
		for _, rule := range g.Rules {
			got[rule.Alert] = rule.Expr.String()
		}
	}
	want := repositoryAlerts(t)
	if len(want) < 10 || !maps.Equal(got, want) {
		t.Errorf("PrometheusRule alerts %v,\nwant deploy/prometheus/alerts.yml's %v", got, want)
	}
	if sm := m.serviceMonitors[0]; sm.Spec.JobLabel != "app.kubernetes.io/name" || !strings.Contains(want["BridgeDown"], `job="bridge"`) {
		t.Errorf("ServiceMonitor jobLabel %q with BridgeDown %q: the job must be named bridge", sm.Spec.JobLabel, want["BridgeDown"])
	}
}

// repositoryAlerts are the alerts of deploy/prometheus/alerts.yml by name, with their expressions.
func repositoryAlerts(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f monitoringv1.PrometheusRuleSpec
	if err := k8syaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, rule := range g.Rules {
			out[rule.Alert] = rule.Expr.String()
		}
	}
	return out
}

// TestHelmChartLint runs Helm's own linter (what `helm lint` runs: Chart.yaml, values and their schema,
// every template rendered and parsed) and fails on any warning or error.
func TestHelmChartLint(t *testing.T) {
	kv, err := chartcommon.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, vals := range []map[string]any{nil, {"serviceMonitor": map[string]any{"enabled": true}}} {
		l := lint.RunAll(chartDir, vals, "moderation", lint.WithKubeVersion(kv))
		for _, msg := range l.Messages {
			if msg.Severity >= support.WarningSev {
				t.Errorf("helm lint (values %v): %s", vals, msg)
			}
		}
	}
}

// TestHelmValuesSchema: values.schema.json refuses what would render a broken release: the tag latest, a
// ConfigMap value that is not a string, a secret in the ConfigMap, a role that does not exist.
func TestHelmValuesSchema(t *testing.T) {
	tests := []struct {
		name   string
		values string
	}{
		{"latest", "image: {tag: latest}"},
		{"number in the ConfigMap", "config: {BRIDGE_REPLICAS: 3}"},
		{"not a BRIDGE_ variable", "config: {LOG_LEVEL: debug}"},
		{"secret in the ConfigMap", "config: {BRIDGE_API_KEY: k}"},
		{"unknown role", "workers: {roles: 'verify,publish'}"},
		{"NATS address with scheme", "nats: {address: 'nats://nats:4222'}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v map[string]any
			if err := k8syaml.Unmarshal([]byte(tt.values), &v); err != nil {
				t.Fatal(err)
			}
			if _, err := render(t, "bridge", v); err == nil {
				t.Errorf("values %s render without error", tt.values)
			}
		})
	}
	if _, err := render(t, "bridge", map[string]any{"config": map[string]any{"BRIDGE_LOG_LEVEL": "debug"}}); err != nil {
		t.Errorf("a valid override is refused: %v", err)
	}
}
