package bridge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/ingest"
)

// registerReadiness exports what /readyz answers as bridge_ready, so Prometheus can alert on a process
// that is up (answers /metrics) but cannot use NATS.
func registerReadiness(reg prometheus.Registerer, h *ingest.Handler) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bridge_ready",
		Help: "1 while /readyz answers 200: NATS and JetStream usable and no shutdown started.",
	}, func() float64 {
		if h.Ready() {
			return 1
		}
		return 0
	}))
}
