package promutil

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRegistrarReusesAndKeepsTheFirstError: a second component on one registry counts into the first's
// collector; a clash with a collector of another kind is an error, and nothing after it registers.
func TestRegistrarReusesAndKeepsTheFirstError(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "bridge_test_total", Help: "a test counter"}
	first := Add(NewRegistrar(reg), prometheus.NewCounter(opts))
	r := NewRegistrar(reg)
	second := Add(r, prometheus.NewCounter(opts))
	second.Inc()
	if got := testutil.ToFloat64(first); got != 1 || r.Err() != nil {
		t.Fatalf("first counter %v, err %v; want 1 and nil: the second component must count in the first's series", got, r.Err())
	}
	Add(r, prometheus.NewGauge(prometheus.GaugeOpts{Name: "bridge_test_total", Help: "a gauge of the same name"}))
	if r.Err() == nil {
		t.Fatal("a gauge named like the counter registered without an error")
	}
	Add(r, prometheus.NewCounter(prometheus.CounterOpts{Name: "bridge_after_total", Help: "after the error"}))
	if n, _ := testutil.GatherAndCount(reg, "bridge_after_total"); n != 0 {
		t.Fatalf("bridge_after_total registered after an error (%d series)", n)
	}
	if c := Add(NewRegistrar(nil), prometheus.NewCounter(opts)); c == nil {
		t.Fatal("a nil registry must hand back the collector")
	}
}
