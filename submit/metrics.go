package submit

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/internal/promutil"
)

type submitMetrics struct {
	// requests counts submissions (moderate.<modality>) by modality and outcome.
	requests *prometheus.CounterVec
	// statusRequests counts jobs.status requests by outcome.
	statusRequests *prometheus.CounterVec
	// unresolved is the submissions whose intent outlived them: see intent.
	unresolved prometheus.Gauge
}

func newSubmitMetrics(reg prometheus.Registerer) (*submitMetrics, error) {
	m := &submitMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_submit_requests_total",
			Help: "Submissions (moderate.<modality>) by modality and outcome.",
		}, []string{"modality", "outcome"}),
		statusRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_submit_status_requests_total",
			Help: "jobs.status requests by outcome: ok, not_found, invalid, error, shutdown.",
		}, []string{"outcome"}),
		unresolved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_submit_unresolved_intents",
			Help: "Submissions interrupted between the upstream's answer and the JOBS write (a process stopped): their jobs may exist upstream and nowhere in the bridge. BRIDGE_ADOPT=true recovers them.",
		}),
	}
	r := promutil.NewRegistrar(reg)
	m.unresolved = promutil.Add(r, m.unresolved)
	m.requests = promutil.Add(r, m.requests)
	m.statusRequests = promutil.Add(r, m.statusRequests)
	return m, r.Err()
}

// count counts one answered request of the endpoint label: a modality, or statusLabel for jobs.status.
func (m *submitMetrics) count(label, outcome string) {
	if label == statusLabel {
		m.statusRequests.WithLabelValues(outcome).Inc()
		return
	}
	m.requests.WithLabelValues(label, outcome).Inc()
}
