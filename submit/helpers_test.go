package submit

import (
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/roletest"
	"github.com/evershield/bridge/upstream/simulator"
)

// env is one test's world (see [roletest.Env]) with a submit service to start.
type env struct{ *roletest.Env }

func newEnv(tb testing.TB, topo roletest.Topology, simCfg simulator.Config) *env {
	tb.Helper()
	return &env{roletest.New(tb, topo, simCfg)}
}

// startSubmitter starts a submit service whose webhooks come to the hook receiver.
func (e *env) startSubmitter(mods ...func(*Config)) *Service {
	e.TB.Helper()
	cfg := Config{
		NC: e.NC, JS: e.JS, Idempotency: e.Res.Idempotency, API: e.API, Store: e.Store, Log: e.Log, Metrics: e.Reg,
		PublicURL: e.HookURL, Token: roletest.Token, IdempotencyWait: 10 * time.Second,
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
