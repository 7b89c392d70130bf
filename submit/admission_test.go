package submit

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/batch"
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

// TestAdmissionBoundary pins admission's arithmetic at the documented budget with literals worked out
// by hand, not by the code: 60 calls a minute, a prompt's 5 min deadline, the 30 s sweep and the 0.8
// share plan on 0.8 × 300 = 240 calls (plus at most 0.8 × the bucket's 5-call burst). With one GET per
// job, 190 owed jobs need 1 + 191 + 2 pages × 10 sweeps = 212 (admitted) and 230 need
// 1 + 231 + 3 × 10 = 262 (refused). In batches of 8 (batch.Cost), 900 owed need 1 + (113 + 1) +
// 10 × 10 = 215 (admitted) and 1200 need 1 + (151 + 1) + 13 × 10 = 283 (refused).
func TestAdmissionBoundary(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	ledger := &owed{}
	var batches atomic.Bool
	b := testworld.StartBudget(t, budget.Config{KV: e.Res.Budget, RPM: 60})
	e.startSubmitter(func(c *Config) {
		c.Ledger, c.Budget = ledger, b
		c.VerifyCost = func(n int) float64 {
			if batches.Load() {
				return batch.Cost(n, 8)
			}
			return float64(n)
		}
	})
	admitted := func(n int64) bool {
		t.Helper()
		ledger.n.Store(n)
		reply := e.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt": "boundary"}`), nil)
		return reply.Header.Get(micro.ErrorCodeHeader) == ""
	}
	for _, c := range []struct {
		batches bool
		owed    int64
		want    bool
	}{{false, 190, true}, {false, 230, false}, {true, 900, true}, {true, 1200, false}} {
		batches.Store(c.batches)
		if got := admitted(c.owed); got != c.want {
			t.Errorf("batches %v, %d owed: admitted %v, want %v", c.batches, c.owed, got, c.want)
		}
	}
}
