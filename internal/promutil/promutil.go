// Package promutil holds the small Prometheus helpers that the roles and tools share: registering
// collectors, and scraping and reading a /metrics exposition.
package promutil

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg, or returns the collector registered before under the same name, so that
// a role restarted in the same process (tests, a supervisor) keeps counting in the same series. A nil reg
// registers nothing.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
