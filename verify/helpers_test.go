package verify

import (
	"cmp"
	"testing"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream/simulator"
)

// env is one test's world (see [testworld.World]) with a verifier to start.
type env struct{ *testworld.World }

func newEnv(tb testing.TB, topo testworld.Topology, simCfg simulator.Config) *env {
	tb.Helper()
	return &env{testworld.New(tb, testworld.WithTopology(topo), testworld.WithSimulator(simCfg))}
}

// startVerifier runs a verifier until the returned stop is called (or the test ends); stop waits for
// Run to return and fails the test on an error.
func (e *env) startVerifier(mods ...func(*Config)) (stop func()) {
	e.TB.Helper()
	cfg := Config{
		JS: e.JS, API: e.API, Deliverer: e.Deliverer, Log: e.Log, Metrics: e.Reg,
		Concurrency: 16, RetryBase: 20 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
		// Tests that are not about the unknown-job budget must not wait for it.
		UnknownRPM: 60000,
	}
	for _, m := range mods {
		m(&cfg)
	}
	if cfg.UnknownLimiter == nil && cfg.UnknownRPM != UnknownOff {
		cfg.UnknownLimiter = e.UnknownBudget(cmp.Or(cfg.UnknownRPM, DefaultUnknownRPM), 0)
	}
	v, err := New(cfg)
	if err != nil {
		e.TB.Fatalf("new verifier: %v", err)
	}
	return testworld.Run(e.TB, "verifier", v.Run)
}

// waitLaneSettled waits until the slow lane has handled every webhook moved there.
func (e *env) waitLaneSettled(d time.Duration) {
	e.TB.Helper()
	e.WaitLaneSettled(contract.Default.SubjectUnknownLane, d)
}
