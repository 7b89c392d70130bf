package reconcile

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream/simulator"
)

// withCompactor gives a replica a compactor on its watcher, with a duplicate window of window.
func (e *env) withCompactor(window time.Duration) func(*Config) {
	return func(c *Config) {
		comp, err := jobs.NewCompactor(jobs.CompactorConfig{Watcher: c.Watcher, Jobs: e.Res.JobsStream, Results: e.Res.Results,
			Archive: e.History, Window: window, Log: e.Log, Metrics: c.Metrics})
		if err != nil {
			e.t.Fatalf("compactor: %v", err)
		}
		c.Compactor = comp
	}
}

func (rp *replica) compactRounds(t *testing.T) float64 {
	n := 0.0
	for _, r := range []string{"ok", "idle", "error"} {
		n += testworld.CounterValue(t, rp.reg, testworld.Series{Name: "bridge_compact_rounds_total", Label: "result", Value: r})
	}
	return n
}

// TestOnlyTheLeaderCompacts: of two replicas, only the lease holder runs compaction rounds, and the jobs
// it delivered lose their JOBS keys and fences once the duplicate window has passed, into the history.
func TestOnlyTheLeaderCompacts(t *testing.T) {
	const window = time.Second
	w := testworld.New(t, testworld.WithProvision(natsx.ProvisionConfig{LeaseTTL: testTTL, DuplicateWindow: window}),
		testworld.WithSimulator(simulator.Config{Seed: 1, DropRate: 1}))
	e := &env{World: w, t: t, ctx: natstest.CtxWithin(t, 2*time.Minute)}
	rps := []*replica{e.start("r1", e.withCompactor(window)), e.start("r2", e.withCompactor(window))}
	lead := waitLeader(t, 5*time.Second, rps...)
	var ids []string
	for range 3 {
		ids = append(ids, e.submit("fine", time.Minute))
	}
	e.waitResults(15*time.Second, 1, ids...)
	natstest.WaitFor(t, 15*time.Second, func() error {
		ji, err := e.Res.JobsStream.Info(e.ctx)
		if err != nil {
			return err
		}
		ri, err := e.Res.Results.Info(e.ctx, jetstream.WithSubjectFilter("bridge.result.>"))
		if err != nil {
			return err
		}
		if ji.State.NumSubjects != 0 || len(ri.State.Subjects) != 0 {
			return fmt.Errorf("%d JOBS keys and %d fences, want none", ji.State.NumSubjects, len(ri.State.Subjects))
		}
		return nil
	})
	for _, id := range ids {
		if in, err := e.History.Delivered(e.ctx, id); err != nil || !in {
			t.Fatalf("history lookup %s: %v %v, want true", id, in, err)
		}
		if got := e.resultsOf(id); len(got) != 1 {
			t.Fatalf("job %s: %d results, want 1", id, len(got))
		}
	}
	for _, rp := range rps {
		if n := rp.compactRounds(t); (rp == lead) != (n > 0) {
			t.Fatalf("replica %s (leader %v) ran %v compaction rounds", rp.r.Instance(), rp == lead, n)
		}
	}
}
