package budget

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/internal/promutil"
)

// metrics are the budget's collectors, prefixed bridge_budget_ and labelled with the budget's key.
type metrics struct {
	leases  *prometheus.CounterVec // outcome
	tokens  prometheus.Counter
	waiting *prometheus.GaugeVec // class
	level   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, key string) (*metrics, error) {
	labels := prometheus.Labels{"budget": key}
	m := &metrics{
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_budget_leases_total", ConstLabels: labels,
			Help: "Lease attempts on the shared upstream budget by outcome: granted, conflict (another process wrote first), error.",
		}, []string{"outcome"}),
		tokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bridge_budget_tokens_leased_total", ConstLabels: labels,
			Help: "Upstream requests this process leased from the shared budget.",
		}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bridge_budget_waiting_calls", ConstLabels: labels,
			Help: "Upstream calls of this process waiting for the shared budget, by class.",
		}, []string{"class"}),
		level: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_budget_level_requests", ConstLabels: labels,
			Help: "Requests in the shared budget's bucket when this process last saw it.",
		}),
	}
	for _, o := range []string{"granted", "conflict", "error"} {
		m.leases.WithLabelValues(o)
	}
	for _, c := range []string{"verify", "poll", "submit"} {
		m.waiting.WithLabelValues(c)
	}
	r := promutil.NewRegistrar(reg)
	m.leases, m.tokens = promutil.Add(r, m.leases), promutil.Add(r, m.tokens)
	m.waiting, m.level = promutil.Add(r, m.waiting), promutil.Add(r, m.level)
	return m, r.Err()
}
