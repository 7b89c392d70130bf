package deploy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestAlertsHaveRunbooks requires every alert rule to carry a runbook_url naming a section of
// docs/RUNBOOK.md, and every section of the runbook to belong to an alert.
func TestAlertsHaveRunbooks(t *testing.T) {
	b, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	runbook, err := os.ReadFile("../docs/RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (.+)$`).FindAllStringSubmatch(string(runbook), -1) {
		anchors[anchor(m[1])] = true
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[anchor(r.Alert)] = true
			want := "docs/RUNBOOK.md#" + anchor(r.Alert)
			if got := r.Annotations["runbook_url"]; got != want {
				t.Errorf("alert %s: runbook_url %q, want %q", r.Alert, got, want)
			}
			if !anchors[anchor(r.Alert)] {
				t.Errorf("alert %s has no section in docs/RUNBOOK.md", r.Alert)
			}
			if r.Alert == "BridgeNoReconciler" && r.Expr != "(sum(bridge_reconcile_is_leader) or vector(0)) == 0" {
				t.Errorf("BridgeNoReconciler expr %q must fire also when no series is scraped", r.Expr)
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatal("no alerts found")
	}
	for a := range anchors {
		if !alerts[a] {
			t.Errorf("docs/RUNBOOK.md section #%s belongs to no alert", a)
		}
	}
}

// anchor is the GitHub heading anchor of a title: lower case, spaces to hyphens, other punctuation dropped.
func anchor(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(title)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// TestChartAlertsAreTheRepositorysAlerts keeps the Helm chart's copy of the alert rules (its
// PrometheusRule reads files inside the chart only) equal to deploy/prometheus/alerts.yml, their one home.
func TestChartAlertsAreTheRepositorysAlerts(t *testing.T) {
	want, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("helm/bridge/files/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("helm/bridge/files/alerts.yml differs from prometheus/alerts.yml: copy it over (cp deploy/prometheus/alerts.yml deploy/helm/bridge/files/alerts.yml)")
	}
}
