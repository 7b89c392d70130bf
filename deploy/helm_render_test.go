//go:build helm

package deploy_test

import (
	"flag"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite deploy/kubernetes/bridge.yaml from the chart")

// renderedManifests is the file of deploy/kubernetes the chart renders to.
const renderedManifests = "kubernetes/bridge.yaml"

// renderedHeader opens the rendered file.
const renderedHeader = `# Rendered from the Helm chart deploy/helm/bridge with its default values as release "bridge"
# (what helm template bridge deploy/helm/bridge prints), for kubectl apply -k deploy/kubernetes without Helm.
# Do not edit: change the chart, then (cd deploy && go test -tags helm -run TestKubernetesManifestsAreTheChart . -update).
# The helm.sh/hook annotations of the provision Job mean nothing to kubectl: the bridge's Deployments wait, restarting,
# until the Job has made the streams (BRIDGE_PROVISION=false).
`

// TestKubernetesManifestsAreTheChart holds deploy/kubernetes/bridge.yaml to the chart: the chart is the one
// Kubernetes path, and the file is its rendering for those without Helm (checked by TestKubernetesManifests).
func TestKubernetesManifestsAreTheChart(t *testing.T) {
	out, err := render(t, "bridge", nil)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	var b strings.Builder
	b.WriteString(renderedHeader)
	for _, name := range slices.Sorted(maps.Keys(out)) {
		doc := strings.TrimSpace(out[name])
		if strings.HasSuffix(name, "NOTES.txt") || doc == "" {
			continue
		}
		b.WriteString("---\n# Source: " + name + "\n" + doc + "\n")
	}
	if *update {
		if err := os.WriteFile(renderedManifests, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(renderedManifests)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != b.String() {
		t.Errorf("%s is not the chart's rendering: run (cd deploy && go test -tags helm -run TestKubernetesManifestsAreTheChart . -update)", renderedManifests)
	}
}
