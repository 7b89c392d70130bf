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

// Registrar registers one component's collectors with a registry by the rule of [Register], keeping the
// first error, so that the component registers each collector in one line and checks [Registrar.Err]
// once. It is not safe for concurrent use.
type Registrar struct {
	reg prometheus.Registerer
	err error
}

// NewRegistrar returns a Registrar for reg; a nil reg registers nothing.
func NewRegistrar(reg prometheus.Registerer) *Registrar { return &Registrar{reg: reg} }

// Add registers c by the rule of [Register] and returns the collector to count in: c, or the one
// registered before under its name. After an error it registers nothing more.
func Add[C prometheus.Collector](r *Registrar, c C) C {
	if r.err != nil {
		return c
	}
	got, err := Register(r.reg, c)
	r.err = err
	return got
}

// Err is the first error met registering, or nil.
func (r *Registrar) Err() error { return r.err }
