package deploy_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// TestAlertRulesParse loads the alert rules with Prometheus's own rule parser, which also parses every
// expression as PromQL and checks the templates: what `promtool check rules` checks.
func TestAlertRulesParse(t *testing.T) {
	groups, errs := rulefmt.ParseFile("prometheus/alerts.yml", false, model.UTF8Validation,
		parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("prometheus/alerts.yml: %v", err)
	}
	if groups == nil || len(groups.Groups) == 0 || len(groups.Groups[0].Rules) == 0 {
		t.Fatal("prometheus/alerts.yml: no rules")
	}
}

// TestDashboardQueriesParse parses every query of the Grafana dashboard as PromQL.
func TestDashboardQueriesParse(t *testing.T) {
	b, err := os.ReadFile("grafana/bridge.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	p := parser.NewParser(parser.Options{})
	n := 0
	for _, panel := range dash.Panels {
		for _, tg := range panel.Targets {
			n++
			if _, err := p.ParseExpr(tg.Expr); err != nil {
				t.Errorf("panel %q: %q: %v", panel.Title, tg.Expr, err)
			}
		}
	}
	if n == 0 {
		t.Fatal("grafana/bridge.json: no queries")
	}
}

// TestComposeFileLoads loads docker-compose.yml with compose-go, the Compose specification's reference
// loader (what `docker compose config` runs): schema, interpolation, anchors and merges. The default
// profile is the cluster, the bridges, the webhook load balancer and the simulator; Prometheus and
// Grafana come with "monitoring".
func TestComposeFileLoads(t *testing.T) {
	tests := []struct {
		profiles []string
		want     []string
	}{
		{nil, []string{"bridge-1", "bridge-2", "lb", "nats-1", "nats-2", "nats-3", "simulator"}},
		{[]string{"monitoring"}, []string{"bridge-1", "bridge-2", "grafana", "lb", "nats-1", "nats-2", "nats-3", "prometheus", "simulator"}},
	}
	for _, tt := range tests {
		// The NATS passwords come from .env, which scripts/images.sh writes; here, stand-ins.
		env := cli.WithEnv([]string{"NATS_BRIDGE_PASSWORD=b", "NATS_OPS_PASSWORD=o", "NATS_DOWNSTREAM_PASSWORD=d"})
		opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"}, cli.WithName("bridge"), cli.WithProfiles(tt.profiles), env)
		if err != nil {
			t.Fatal(err)
		}
		p, err := opts.LoadProject(context.Background())
		if err != nil {
			t.Fatalf("docker-compose.yml: %v", err)
		}
		got := p.ServiceNames()
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("docker-compose.yml with profiles %q runs %q, want %q", tt.profiles, got, tt.want)
		}
	}
}
