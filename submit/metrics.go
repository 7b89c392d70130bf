package submit

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/internal/promutil"
)

type submitMetrics struct {
	requests *prometheus.CounterVec
}

func newSubmitMetrics(reg prometheus.Registerer) (*submitMetrics, error) {
	m := &submitMetrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bridge_submit_requests_total",
		Help: "Submit and job-status requests, by modality (status for jobs.status) and outcome.",
	}, []string{"modality", "outcome"})}
	var err error
	if m.requests, err = promutil.Register(reg, m.requests); err != nil {
		return nil, err
	}
	return m, nil
}
