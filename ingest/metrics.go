package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/internal/promutil"
)

// Outcomes of a webhook besides the error codes of [errorClasses].
const (
	outcomeAccepted  = "accepted"
	outcomeDuplicate = "duplicate"
)

// metrics are the bridge_ingest_* collectors.
type metrics struct {
	// outcomes holds one counter per outcome label, looked up once so a request does no label hashing.
	outcomes map[string]prometheus.Counter
	publish  prometheus.Histogram
	inFlight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	webhooks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "bridge",
		Subsystem: "ingest",
		Name:      "webhooks_total",
		Help:      "Webhook requests by outcome: accepted, duplicate, or the error code they were rejected with.",
	}, []string{"outcome"})
	m := &metrics{
		outcomes: map[string]prometheus.Counter{},
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "bridge",
			Subsystem: "ingest",
			Name:      "publish_duration_seconds",
			Help:      "Time from publishing a webhook to JetStream until its acknowledgement or error.",
			Buckets:   prometheus.ExponentialBuckets(0.00025, 2, 15), // 0.25 ms to about 4 s
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "bridge",
			Subsystem: "ingest",
			Name:      "in_flight_webhooks",
			Help:      "Webhooks holding a concurrency slot: being checked or waiting for the JetStream ack.",
		}),
	}
	outcomes := []string{outcomeAccepted, outcomeDuplicate, codeInternal}
	for _, c := range errorClasses {
		if c.err != ErrNotReady {
			outcomes = append(outcomes, c.code)
		}
	}
	r := promutil.NewRegistrar(reg)
	webhooks, m.publish, m.inFlight = promutil.Add(r, webhooks), promutil.Add(r, m.publish), promutil.Add(r, m.inFlight)
	for _, o := range outcomes {
		m.outcomes[o] = webhooks.WithLabelValues(o)
	}
	return m, r.Err()
}

// count adds one webhook with the given outcome.
func (m *metrics) count(outcome string) {
	if c, ok := m.outcomes[outcome]; ok {
		c.Inc()
	}
}
