package promutil

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// exposition is what a bridge's /metrics might serve: a counter with several label sets, families that
// share its name as a prefix, a gauge, and a histogram.
const exposition = `# HELP bridge_upstream_calls_total Upstream API calls.
# TYPE bridge_upstream_calls_total counter
bridge_upstream_calls_total{endpoint="job",outcome="ok"} 3
bridge_upstream_calls_total{endpoint="job",outcome="error"} 1
bridge_upstream_calls_total{endpoint="jobs",outcome="ok"} 2.5
# TYPE bridge_upstream_calls_total_other counter
bridge_upstream_calls_total_other 99
bridge_upstream_calls_totalx{endpoint="job"} 7
# TYPE bridge_reconcile_is_leader gauge
bridge_reconcile_is_leader 1
# TYPE bridge_upstream_budget_wait_seconds histogram
bridge_upstream_budget_wait_seconds_bucket{class="user",le="+Inf"} 2
bridge_upstream_budget_wait_seconds_sum{class="user"} 0.5
bridge_upstream_budget_wait_seconds_count{class="user"} 2
`

// metricsServer serves exposition at /metrics, a malformed body at /bad and nothing at /gone.
func metricsServer(tb testing.TB) string {
	tb.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte(exposition))
	})
	mux.HandleFunc("/bad", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("bridge_upstream_calls_total{endpoint=\"job\" 3\n"))
	})
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv.URL
}

func TestScrapeSumsACounterAcrossItsLabelSets(t *testing.T) {
	base := metricsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fams, err := Scrape(ctx, http.DefaultClient, base+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want float64
	}{
		{"bridge_upstream_calls_total", 6.5}, // not the families sharing its prefix
		{"bridge_upstream_calls_total_other", 99},
		{"bridge_upstream_calls_totalx", 7},
		{"bridge_reconcile_is_leader", 1},
		{"bridge_verify_outcomes_total", 0}, // absent: a vector with no series yet
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sum(fams, tt.name); got != tt.want {
				t.Errorf("Sum(%s) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
	byEndpoint := ByLabel(fams, "bridge_upstream_calls_total", "endpoint")
	if want := map[string]float64{"job": 4, "jobs": 2.5}; !maps.Equal(byEndpoint, want) {
		t.Errorf("ByLabel(endpoint) = %v, want %v", byEndpoint, want)
	}
	hist := fams["bridge_upstream_budget_wait_seconds"].GetMetric()
	if len(hist) != 1 || Label(hist[0], "class") != "user" || Label(hist[0], "none") != "" {
		t.Errorf("histogram series = %v, want one with class user", hist)
	}
}

func TestScrapeErrors(t *testing.T) {
	base := metricsServer(t)
	tests := []struct {
		name, url, want string
	}{
		{"malformed body", base + "/bad", "parse " + base + "/bad"},
		{"not found", base + "/gone", "HTTP 404"},
		{"unreachable", "http://127.0.0.1:1/metrics", "connect"},
		{"bad url", "http://[::1/metrics", "missing ']'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			fams, err := Scrape(ctx, http.DefaultClient, tt.url)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Scrape(%s) = %d families, %v; want an error containing %q", tt.url, len(fams), err, tt.want)
			}
		})
	}
}
