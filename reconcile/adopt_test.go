package reconcile

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestAdoptRecoversJobsSubmittedElsewhere pins issue 11's adoption: with Adopt, jobs submitted straight to
// the upstream, whose webhooks never come, get a record (origin adopted) and exactly one poll result
// within two poll intervals plus the grace of finishing; without Adopt they are nobody's business.
func TestAdoptRecoversJobsSubmittedElsewhere(t *testing.T) {
	e := newEnv(t, simulator.Config{Seed: 21, QueueDelay: 20 * time.Millisecond, ProcessDelay: 150 * time.Millisecond})
	rp := e.start("adopter", func(c *Config) { c.Adopt = true })
	defer rp.stop()
	var ids []string
	for i := range 20 {
		// Submitted around the bridge and without a webhook_url: no webhook ever comes.
		sub, err := e.API.Submit(e.ctx, "prompt", map[string]string{"prompt": fmt.Sprint("elsewhere ", i)}, "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sub.JobID)
	}
	e.waitResults(30*time.Second, 1, ids...)
	bound := 2*testPoll + testGrace + time.Second // DESIGN's bound, plus a second for a loaded machine
	for _, id := range ids {
		got := e.resultsOf(id)
		if len(got) != 1 || got[0].Source != contract.SourcePoll {
			t.Fatalf("job %s: %d results (%+v), want one by poll", id, len(got), got)
		}
		if rec := e.Record(id); rec.Origin != jobs.OriginAdopted || rec.State != jobs.StateDelivered {
			t.Fatalf("job %s: record origin %s state %s, want adopted and delivered", id, rec.Origin, rec.State)
		}
		info, _ := e.Sim.Job(id)
		if late := got[0].Stored.Sub(info.CompletedAt); late > bound {
			t.Fatalf("job %s published %v after it finished; the bound is %v", id, late, bound)
		}
	}
	if n := testutil.ToFloat64(rp.r.m.adopted); n != float64(len(ids)) {
		t.Fatalf("adopted %v, want %d", n, len(ids))
	}
}
