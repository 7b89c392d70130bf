package testworld

import (
	"cmp"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/internal/natstest"
)

// StartBudget starts the budget of cfg, the one the bridge runs, and stops it when the test ends.
// Instance defaults to "test", and Log to the test's at warn level.
func StartBudget(tb testing.TB, cfg budget.Config) *budget.Shared {
	tb.Helper()
	cfg.Instance = cmp.Or(cfg.Instance, "test")
	if reflect.ValueOf(cfg.Log).IsZero() {
		cfg.Log = zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.WarnLevel)
	}
	b, err := budget.New(cfg)
	if err != nil {
		tb.Fatalf("budget: %v", err)
	}
	if err := b.Start(natstest.CtxWithin(tb, 10*time.Second)); err != nil {
		tb.Fatalf("start budget: %v", err)
	}
	tb.Cleanup(b.Stop)
	return b
}

// unknownBudgets numbers the unknown-job budgets of the tests in this process.
var unknownBudgets atomic.Int64

// UnknownBudget starts an unknown-job budget of rpm and burst (0: five seconds' worth) in BRIDGE_BUDGET,
// under a key of its own, so that verifiers built with different budgets in one test do not share one.
func (e *World) UnknownBudget(rpm, burst int) *budget.Shared {
	e.TB.Helper()
	key := fmt.Sprintf("%s-%d", budget.KeyUnknown, unknownBudgets.Add(1))
	return StartBudget(e.TB, budget.Config{KV: e.Res.Budget, Key: key, RPM: rpm, Burst: burst})
}
