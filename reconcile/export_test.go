package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/evershield/bridge/batch"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/upstream/simulator"
)

// faithful is a Fidelity whose check answers "no custom categories" at once.
func faithful(t *testing.T) *batch.Fidelity {
	f := &batch.Fidelity{Check: func(context.Context) (bool, error) { return false, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go f.Run(ctx)
	<-f.Checked()
	return f
}

// TestSweepSettlesMissedJobsWithOneExport: several jobs whose webhooks were lost are settled by one export
// call (source export) instead of a GET each; a failed one is still fetched with GET /job, for its
// error_code, which the export lacks.
func TestSweepSettlesMissedJobsWithOneExport(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	var ids []string
	for _, text := range []string{"one", "two", "three", "four sim:fail"} {
		ids = append(ids, e.submit(text, time.Minute))
	}
	for _, id := range ids {
		e.waitTerminal(id)
	}
	gets := e.Sim.CallCount(simulator.EndpointJob) // the test's own
	e.start("r1", func(c *Config) {
		c.Export, c.Fidelity, c.PollInterval = e.API, faithful(t), time.Hour // one sweep, at the start
		c.WebhookGrace = -1
	})
	e.waitResults(10*time.Second, 1, ids...)
	for i, id := range ids {
		want := contract.SourceExport
		if i == 3 {
			want = contract.SourcePoll
		}
		if got := e.resultsOf(id); len(got) != 1 || got[0].Source != want {
			t.Errorf("job %d: results %+v, want one from %s", i, got, want)
		}
	}
	if n := e.Sim.CallCount(simulator.EndpointExport); n != 1 {
		t.Errorf("%d export calls, want 1", n)
	}
	if n := e.Sim.CallCount(simulator.EndpointJob) - gets; n != 1 {
		t.Errorf("%d GET /job calls, want 1 (the failed job)", n)
	}
}
