package ops

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/evershield/bridge/internal/promutil"
)

// BridgeStatus is what one bridge process's /metrics and /readyz say.
type BridgeStatus struct {
	URL string `json:"url"`
	// Error is set when the bridge could not be scraped; the other fields are then empty.
	Error string `json:"error,omitempty"`
	// Ready is /readyz answering 200; nil when it could not be asked.
	Ready *bool `json:"ready"`
	// ReconcileLeader is bridge_reconcile_is_leader; nil when the process does not run the role.
	ReconcileLeader *bool `json:"reconcile_leader"`
	// UpstreamCalls is bridge_upstream_calls_total by endpoint; RateLimited bridge_upstream_rate_limited_total.
	UpstreamCalls map[string]float64 `json:"upstream_calls"`
	RateLimited   float64            `json:"rate_limited_total"`
	// SampleSeconds is the time between the two scrapes, 0 with one scrape; the rates below are nil then.
	SampleSeconds     float64  `json:"sample_seconds"`
	CallsPerMinute    *float64 `json:"calls_per_minute"`
	RateLimitedRecent *float64 `json:"rate_limited_in_sample"`
	// BudgetRPM is the configured budget; BudgetUse CallsPerMinute/BudgetRPM.
	BudgetRPM int      `json:"budget_rpm"`
	BudgetUse *float64 `json:"budget_use"`
	// BudgetWait is the mean wait for the budget so far, seconds, by priority class.
	BudgetWait map[string]float64 `json:"budget_wait_mean_seconds"`
	// Verify is bridge_verify_outcomes_total by outcome; DeadLetters bridge_deadletter_total by reason.
	Verify      map[string]float64 `json:"verify_outcomes"`
	DeadLetters map[string]float64 `json:"dead_letters"`
	// Webhooks is bridge_ingest_webhooks_total by outcome.
	Webhooks map[string]float64 `json:"webhooks"`
}

// scrapeBridges scrapes every configured bridge, concurrently.
func scrapeBridges(ctx context.Context, cfg StatusConfig) []BridgeStatus {
	out := make([]BridgeStatus, len(cfg.MetricsURLs))
	var wg sync.WaitGroup
	for i, u := range cfg.MetricsURLs {
		wg.Go(func() { out[i] = scrapeBridge(ctx, cfg, u) })
	}
	wg.Wait()
	return out
}

func scrapeBridge(ctx context.Context, cfg StatusConfig, u string) BridgeStatus {
	b := BridgeStatus{URL: u, BudgetRPM: cfg.RPM}
	first, err := promutil.Scrape(ctx, cfg.HTTP, u)
	if err != nil {
		b.Error = "metrics unreachable: " + err.Error()
		return b
	}
	t0 := time.Now()
	if ready, err := readyz(ctx, cfg.HTTP, u); err == nil {
		b.Ready = &ready
	}
	fill(&b, first)
	if cfg.Sample <= 0 {
		return b
	}
	t := time.NewTimer(cfg.Sample)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return b
	case <-t.C:
	}
	second, err := promutil.Scrape(ctx, cfg.HTTP, u)
	if err != nil {
		return b
	}
	secs := time.Since(t0).Seconds()
	fill(&b, second)
	b.SampleSeconds = secs
	calls := (promutil.Sum(second, "bridge_upstream_calls_total") - promutil.Sum(first, "bridge_upstream_calls_total")) / secs * 60
	limited := promutil.Sum(second, "bridge_upstream_rate_limited_total") - promutil.Sum(first, "bridge_upstream_rate_limited_total")
	use := calls / float64(cfg.RPM)
	b.CallsPerMinute, b.RateLimitedRecent, b.BudgetUse = &calls, &limited, &use
	return b
}

// setBudgetRPM expresses the bridge's budget use against rpm.
func (b *BridgeStatus) setBudgetRPM(rpm int) {
	b.BudgetRPM = rpm
	if b.CallsPerMinute != nil {
		use := *b.CallsPerMinute / float64(rpm)
		b.BudgetUse = &use
	}
}

func fill(b *BridgeStatus, fams map[string]*dto.MetricFamily) {
	b.UpstreamCalls = promutil.ByLabel(fams, "bridge_upstream_calls_total", "endpoint")
	b.RateLimited = promutil.Sum(fams, "bridge_upstream_rate_limited_total")
	b.Verify = promutil.ByLabel(fams, "bridge_verify_outcomes_total", "outcome")
	b.DeadLetters = promutil.ByLabel(fams, "bridge_deadletter_total", "reason")
	b.Webhooks = promutil.ByLabel(fams, "bridge_ingest_webhooks_total", "outcome")
	b.BudgetWait = map[string]float64{}
	if f := fams["bridge_upstream_budget_wait_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			if h := m.GetHistogram(); h != nil && h.GetSampleCount() > 0 {
				b.BudgetWait[promutil.Label(m, "class")] = h.GetSampleSum() / float64(h.GetSampleCount())
			}
		}
	}
	if f := fams["bridge_reconcile_is_leader"]; f != nil {
		v := promutil.Sum(fams, "bridge_reconcile_is_leader") > 0
		b.ReconcileLeader = &v
	}
}

// readyz asks the /readyz beside a /metrics URL.
func readyz(ctx context.Context, c *http.Client, metricsURL string) (bool, error) {
	pu, err := url.Parse(metricsURL)
	if err != nil {
		return false, err
	}
	pu.Path = strings.TrimSuffix(pu.Path, "/metrics") + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pu.String(), nil)
	if err != nil {
		return false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}
