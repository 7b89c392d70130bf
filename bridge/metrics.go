package bridge

import (
	"regexp"
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/ingest"
)

// registerReadiness exports what /readyz answers as bridge_ready, so Prometheus can alert on a process
// that is up (answers /metrics) but cannot use NATS.
func registerReadiness(reg prometheus.Registerer, h *ingest.Handler) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bridge_ready",
		Help: "1 while /readyz answers 200: NATS and JetStream usable, every role of the process serving, and no shutdown started.",
	}, func() float64 {
		if h.Ready() {
			return 1
		}
		return 0
	}))
}

// registerBuildInfo exports bridge_build_info{version,go_version} 1, so dashboards and alerts can tell
// which build each process runs.
func registerBuildInfo(reg prometheus.Registerer, version string) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "bridge_build_info",
		Help:        "Always 1; the labels name the build: its version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "go_version": runtime.Version()},
	}, func() float64 { return 1 }))
}

// semver is the semver 2.0 pattern micro checks a service version with (semver.org's suggested one).
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// serviceVersion turns the build's version into the semver the micro service must carry: v1.2.3 and
// git describe's v1.2.3-4-gabcdef are used as they are (without the v); anything else, such as a bare
// commit or (devel), becomes 0.0.0+<it>.
func serviceVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if semver.MatchString(v) {
		return v
	}
	meta := strings.Trim(regexp.MustCompile(`[^0-9A-Za-z-]+`).ReplaceAllString(v, "."), ".")
	if sv := "0.0.0+" + meta; semver.MatchString(sv) {
		return sv
	}
	return "0.0.0"
}
