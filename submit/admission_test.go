package submit

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream/simulator"
)

// owed is a Ledger the test sets.
type owed struct{ n atomic.Int64 }

func (o *owed) Count() int { return int(o.n.Load()) }

// TestAdmissionPlansOnTheBudget: with a Ledger, a submission is admitted while the budget the bridge
// runs (60 a minute) can carry the owed verifications before the job's deadline, and refused as BUSY
// (429) without an upstream call once it cannot; admission without the budget is a config error.
func TestAdmissionPlansOnTheBudget(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	ledger := &owed{}
	if _, err := New(Config{NC: e.NC, JS: e.JS, Idempotency: e.Res.Idempotency, API: e.API, Store: e.Store,
		Ledger: ledger}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Budget") {
		t.Fatalf("New with a Ledger and no Budget = %v, want ErrInvalidConfig naming Budget", err)
	}
	b := testworld.StartBudget(t, budget.Config{KV: e.Res.Budget, RPM: 60})
	e.startSubmitter(func(c *Config) { c.Ledger, c.Budget = ledger, b })
	if r := e.Submit("prompt", map[string]string{"prompt": "admitted"}); r.JobID == "" {
		t.Fatalf("reply %+v, want a job", r)
	}
	ledger.n.Store(100_000) // far more than 60 a minute carries before any deadline
	reply := e.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt": "refused"}`), nil)
	if code, desc := reply.Header.Get(micro.ErrorCodeHeader), reply.Header.Get(micro.ErrorHeader); code != "429" ||
		!strings.HasPrefix(desc, "BUSY: ") {
		t.Fatalf("over budget: %q %q, want 429 BUSY: ...", code, desc)
	}
	if n := e.Sim.CallCount(simulator.EndpointSubmit); n != 1 {
		t.Fatalf("%d upstream submissions, want 1 (the refused one never goes out)", n)
	}
}
