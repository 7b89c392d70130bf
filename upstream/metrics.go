package upstream

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/internal/promutil"
)

// metrics are the client's collectors, all prefixed bridge_upstream_.
type metrics struct {
	calls       *prometheus.CounterVec   // endpoint, outcome
	latency     *prometheus.HistogramVec // endpoint
	wait        *prometheus.HistogramVec // class
	rateLimited prometheus.Counter
	busy        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_upstream_calls_total",
			Help: "Upstream calls by endpoint and outcome (ok, the upstream's error code, 4xx/5xx, timeout, connection, canceled, bad_response).",
		}, []string{"endpoint", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bridge_upstream_call_duration_seconds",
			Help:    "Duration of upstream HTTP exchanges, budget wait excluded.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"endpoint"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bridge_upstream_budget_wait_seconds",
			Help:    "Time calls waited for the upstream budget, by priority class.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"class"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bridge_upstream_rate_limited_total",
			Help: "429 answers from the upstream.",
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bridge_upstream_busy_total",
			Help: "Submissions the budget refused before any call (BUSY): the account's requests were owed to accepted work.",
		}),
	}
	r := promutil.NewRegistrar(reg)
	m.calls, m.latency, m.wait = promutil.Add(r, m.calls), promutil.Add(r, m.latency), promutil.Add(r, m.wait)
	m.rateLimited, m.busy = promutil.Add(r, m.rateLimited), promutil.Add(r, m.busy)
	return m, r.Err()
}

// knownCodes are the error codes used as outcome labels as they are; others become 4xx/5xx.
var knownCodes = map[string]bool{
	"INVALID_REQUEST": true, "UNAUTHORIZED": true, "PAYMENT_REQUIRED": true, "FORBIDDEN": true,
	"ACCOUNT_TERMINATED": true, "JOB_NOT_FOUND": true, "RATE_LIMITED": true, "INTERNAL_ERROR": true,
	"SERVICE_UNAVAILABLE": true, CodeStatusUnknown: true,
}

// outcome is the calls_total label for an error (nil = ok).
func outcome(e *Error) string {
	switch {
	case e == nil:
		return "ok"
	case e.Status == 0 || e.Code == CodeBadResponse:
		switch e.Code {
		case CodeTimeout:
			return "timeout"
		case CodeCanceled:
			return "canceled"
		case CodeBadResponse:
			return "bad_response"
		}
		return "connection"
	case knownCodes[e.Code]:
		return e.Code
	case e.Status >= 500:
		return "5xx"
	}
	return "4xx"
}
