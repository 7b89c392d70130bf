package submit

import (
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream/simulator"
)

// env is one test's world (see [testworld.World]) with a submit service to start.
type env struct{ *testworld.World }

func newEnv(tb testing.TB, topo testworld.Topology, simCfg simulator.Config) *env {
	tb.Helper()
	return &env{testworld.New(tb, testworld.WithTopology(topo), testworld.WithSimulator(simCfg), testworld.WithHookReceiver())}
}

// startSubmitter starts a submit service whose webhooks come to the hook receiver.
func (e *env) startSubmitter(mods ...func(*Config)) *Service {
	e.TB.Helper()
	cfg := Config{
		NC: e.NC, JS: e.JS, Idempotency: e.Res.Idempotency, API: e.API, Store: e.Store, Log: e.Log, Metrics: e.Reg,
		PublicURL: e.HookURL, Token: testworld.Token, IdempotencyWait: 10 * time.Second,
	}
	for _, m := range mods {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		e.TB.Fatalf("new submit service: %v", err)
	}
	if err := s.Start(natstest.CtxWithin(e.TB, 30*time.Second)); err != nil {
		e.TB.Fatalf("start submit service: %v", err)
	}
	e.TB.Cleanup(func() { _ = s.Stop() })
	return s
}
