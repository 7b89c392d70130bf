package bridge

import (
	"cmp"
	"encoding/json"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/submit"
	"github.com/evershield/bridge/upstream/simulator"
	"github.com/evershield/bridge/verify"
)

// env is one test's world (see [testworld.World]) with the two roles to start.
type env struct{ *testworld.World }

func newEnv(tb testing.TB, topo testworld.Topology, simCfg simulator.Config) *env {
	tb.Helper()
	return &env{testworld.New(tb, testworld.WithTopology(topo), testworld.WithSimulator(simCfg), testworld.WithHookReceiver())}
}

// startVerifier runs a verifier tuned for tests until the test ends.
func (e *env) startVerifier(mods ...func(*verify.Config)) {
	e.TB.Helper()
	cfg := verify.Config{JS: e.JS, API: e.API, Deliverer: e.Deliverer, Log: e.Log, Metrics: e.Reg, Concurrency: 16,
		RetryBase: 20 * time.Millisecond, RetryMax: 500 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
		UnknownRPM: 60000} // only a test about the unknown-job budget waits for it
	for _, m := range mods {
		m(&cfg)
	}
	if cfg.UnknownLimiter == nil && cfg.UnknownRPM != verify.UnknownOff {
		cfg.UnknownLimiter = e.UnknownBudget(cmp.Or(cfg.UnknownRPM, verify.DefaultUnknownRPM), 0)
	}
	v, err := verify.New(cfg)
	if err != nil {
		e.TB.Fatalf("new verifier: %v", err)
	}
	testworld.Run(e.TB, "verifier", v.Run)
}

// startSubmitter starts a submit service whose webhooks come to the hook receiver.
func (e *env) startSubmitter(mods ...func(*submit.Config)) {
	e.TB.Helper()
	cfg := submit.Config{NC: e.NC, JS: e.JS, Idempotency: e.Res.Idempotency, API: e.API, Store: e.Store,
		Log: e.Log, Metrics: e.Reg, PublicURL: e.HookURL, Token: testworld.Token, IdempotencyWait: 10 * time.Second}
	for _, m := range mods {
		m(&cfg)
	}
	s, err := submit.New(cfg)
	if err != nil {
		e.TB.Fatalf("new submit service: %v", err)
	}
	if err := s.Start(natstest.CtxWithin(e.TB, 30*time.Second)); err != nil {
		e.TB.Fatalf("start submit service: %v", err)
	}
	e.TB.Cleanup(func() { _ = s.Stop() })
}

// jobIDOf is the job_id of a webhook body, "" if it has none.
func jobIDOf(body []byte) (string, bool) {
	var v struct {
		JobID string `json:"job_id"`
	}
	err := json.Unmarshal(body, &v)
	return v.JobID, err == nil && v.JobID != ""
}
