package bridge

import (
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"
)

// compactingWorld is a world on topo whose streams have a duplicate window of 1 s, with the App's verify
// and reconcile roles running on it (startCompactingApp): a delivered job is compacted within seconds.
func compactingWorld(t *testing.T, topo testworld.Topology, mods ...func(*Config)) *testworld.World {
	t.Helper()
	e := testworld.New(t, testworld.WithTopology(topo), testworld.WithSimulator(simulator.Config{}),
		testworld.WithProvision(natsx.ProvisionConfig{DuplicateWindow: time.Second, Retention: time.Hour}))
	startCompactingApp(t, e, mods...)
	return e
}

// wantOneResultEach fails unless RESULTS holds exactly one result for each of ids and none for another job.
func wantOneResultEach(t *testing.T, e *testworld.World, ids ...string) {
	t.Helper()
	got := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("%d results for job %s, want 1", got[id], id)
		}
	}
	if len(got) != len(ids) {
		t.Errorf("results for %d jobs, want %d: %v", len(got), len(ids), got)
	}
}

// wantCompacted fails unless each of ids is in the history and has no JOBS record.
func wantCompacted(t *testing.T, e *testworld.World, ids ...string) {
	t.Helper()
	ctx := natstest.CtxWithin(t, 30*time.Second)
	for _, id := range ids {
		if in, err := e.History.Delivered(ctx, id); err != nil || !in {
			t.Fatalf("history lookup of %s: %v %v, want true", id, in, err)
		}
		if _, _, err := e.Store.Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Fatalf("record of compacted job %s: %v, want ErrNotFound", id, err)
		}
	}
}

// TestRepostedWebhookOfCompactedJobPublishesNothing: jobs delivered by their webhooks and compacted by the
// App's reconcile lease holder (JOBS key and fence gone, id in the history) get their webhooks posted
// again, outside the duplicate window, so WEBHOOKS stores them: the verifier answers them from the
// history without an upstream call, and no second result goes out. On a single node and on a 3-node
// cluster (R3; history reads from the stream leader).
func TestRepostedWebhookOfCompactedJobPublishesNothing(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) {
			e := compactingWorld(t, topo)
			ids := []string{deliverOne(t, e), deliverOne(t, e)}
			waitNoHotState(t, e)
			wantCompacted(t, e, ids...)

			gets := e.Sim.CallCount(simulator.EndpointJob)
			for _, id := range ids {
				e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
			}
			e.WaitSettled(20 * time.Second)
			if n := len(e.StreamMsgs(contract.Default.StreamWebhooks, "")); n != 4 {
				t.Fatalf("%d webhooks stored, want 4 (the re-posted ones outside the duplicate window)", n)
			}
			if n := e.Sim.CallCount(simulator.EndpointJob) - gets; n != 0 {
				t.Errorf("%d upstream GETs for the re-posted webhooks of compacted jobs, want 0", n)
			}
			wantOneResultEach(t, e, ids...)
			wantCompacted(t, e, ids...) // no hot record again
			if n := len(e.StreamMsgs(contract.Default.StreamDeadLetter, "")); n != 0 {
				t.Errorf("%d dead letters, want 0", n)
			}
		})
	}
}

// TestReplayOfCompactedJobsPublishesNothing: `bridge replay -stream WEBHOOKS -reverify` (ops.Replay, as the
// CLI calls it) of the webhooks of jobs delivered and compacted republishes each into WEBHOOKS for the
// running verifier, which finds each job in the history: no upstream call, no second result. On a single
// node and on a 3-node cluster (R3).
func TestReplayOfCompactedJobsPublishesNothing(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) {
			e := compactingWorld(t, topo)
			ids := []string{deliverOne(t, e), deliverOne(t, e)}
			waitNoHotState(t, e)
			wantCompacted(t, e, ids...)

			gets := e.Sim.CallCount(simulator.EndpointJob)
			res, err := ops.Replay(natstest.CtxWithin(t, 30*time.Second), ops.ReplayConfig{JS: e.JS,
				Log: zerolog.New(zerolog.NewTestWriter(t)), Name: "old-webhooks", Reverify: true, Replicas: topo.Replicas,
				Selection: ops.Selection{Stream: contract.Default.StreamWebhooks}})
			if err != nil || !res.Done || res.Published != 2 || res.Duplicates != 0 {
				t.Fatalf("replay: %+v %v; want done, 2 published, 0 duplicates", res, err)
			}
			e.WaitSettled(20 * time.Second)
			if n := len(e.StreamMsgs(contract.Default.StreamWebhooks, "")); n != 4 {
				t.Fatalf("%d webhooks stored, want 4 (2 delivered, 2 re-verification copies)", n)
			}
			if n := e.Sim.CallCount(simulator.EndpointJob) - gets; n != 0 {
				t.Errorf("%d upstream GETs for the replayed webhooks of compacted jobs, want 0", n)
			}
			wantOneResultEach(t, e, ids...)
			wantCompacted(t, e, ids...)
			if n := len(e.StreamMsgs(contract.Default.StreamDeadLetter, "")); n != 0 {
				t.Errorf("%d dead letters, want 0", n)
			}
		})
	}
}

// TestJobPendingAcrossCompactionDeliveredOnce: a job is pending (its record made as a submission makes it,
// with a deadline an hour away, so that only its webhook delivers it) while the App's compactor moves
// another, delivered, job into the history. The pending job keeps its record through that round; its
// webhook then delivers it once; it is compacted in its turn, and its webhook posted again after that
// publishes nothing. On a single node and on a 3-node cluster (R3).
func TestJobPendingAcrossCompactionDeliveredOnce(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) {
			// No early poll: the pending job waits for its webhook (not poll-only, and a long grace).
			e := compactingWorld(t, topo, func(c *Config) { c.WebhookGrace, c.PublicURL = time.Hour, "https://bridge.example.com" })
			ctx := natstest.CtxWithin(t, time.Minute)
			pending := e.SubmitDirect("prompt", map[string]string{"prompt": "pending across a compaction"})
			now := time.Now().UTC()
			if _, err := e.Store.Create(ctx, jobs.Record{JobID: pending, Modality: "prompt", State: jobs.StatePending,
				Origin: jobs.OriginSubmit, SubmittedAt: now, Deadline: now.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			delivered := deliverOne(t, e)
			waitHotState(t, e, 1, 0, 20*time.Second) // the delivered job compacted, the pending one kept
			wantCompacted(t, e, delivered)
			if rec := e.Record(pending); rec.State != jobs.StatePending {
				t.Fatalf("pending job is %s after the compaction, want pending", rec.State)
			}
			if in, err := e.History.Delivered(ctx, pending); err != nil || in {
				t.Fatalf("history lookup of the pending job: %v %v, want false", in, err)
			}

			e.PublishWebhook("prompt", pending, testworld.WebhookBody(pending, false))
			e.WaitState(pending, jobs.StateDelivered, 20*time.Second)
			e.WaitSettled(20 * time.Second)
			wantOneResultEach(t, e, delivered, pending)
			waitNoHotState(t, e)
			wantCompacted(t, e, pending)

			e.PublishWebhook("prompt", pending, testworld.WebhookBody(pending, false))
			e.WaitSettled(20 * time.Second)
			wantOneResultEach(t, e, delivered, pending)
			wantCompacted(t, e, pending)
		})
	}
}
