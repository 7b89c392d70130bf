package crash_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestCompactionCrashLosesAndDoublesNothing SIGKILLs the bridge in the middle of a compaction round, at
// each of the compactor's failpoints (BRIDGE_TEST_FAILPOINT, see jobs.Failpoints), and restarts it:
//
//   - compact-after-history: the round's ids are in the history and none of them is removed yet;
//   - compact-after-remove: one job of the round has lost its JOBS key and fences, others not yet.
//
// Eight jobs are submitted over moderate.prompt (every second one with an Idempotency-Key) and delivered by
// their webhooks; once their duplicate window
// (3 s; the deadlines are 2 s) has passed, the leader's compactor takes them and the process blocks at
// the failpoint, where the test checks the half-done state and kills it. The restarted process (without
// the failpoint) compacts what is left once it holds the reconciler lease. Then every job is in the
// history with no JOBS key and no fence, BRIDGE_IDEMPOTENCY keeps no subject (the intents and the keys
// purged; a key whose purge the kill interrupted was purged by the restarted round), a keyed retry gets
// its job_id from the history, each job's webhook is posted again and all the webhooks are
// replayed for re-verification (ops.Replay, as `bridge replay -reverify`): no upstream GET, no new JOBS
// record, and RESULTS holds exactly one result per job.
//
// Both points on a single node and on a 3-node cluster (R3), where every history read is the stream
// leader's.
//
// Bound: the failpoint is reached within 30 s of the results; after the restart everything is compacted
// within 60 s (the killed process's lease expires after 10 s).
func TestCompactionCrashLosesAndDoublesNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		point jobs.Failpoint
		nodes int
	}{
		{"single/" + string(jobs.CompactAfterHistory), jobs.CompactAfterHistory, 1},
		{"single/" + string(jobs.CompactAfterRemove), jobs.CompactAfterRemove, 1},
		{"cluster/" + string(jobs.CompactAfterHistory), jobs.CompactAfterHistory, 3},
		{"cluster/" + string(jobs.CompactAfterRemove), jobs.CompactAfterRemove, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testCompactionCrash(t, tc.point, tc.nodes)
		})
	}
}

func testCompactionCrash(t *testing.T, point jobs.Failpoint, nodes int) {
	const n = 8
	r := newRig(t, rigConfig{nodes: nodes,
		sim: &simulator.Config{Seed: 23, QueueDelay: 10 * time.Millisecond, ProcessDelay: 50 * time.Millisecond,
			DuplicateRate: 0.3, Log: zerolog.Nop()},
		env: map[string]string{
			"BRIDGE_TIMEOUT_PROMPT": "2s", "BRIDGE_TIMEOUT_IMAGE": "2s", "BRIDGE_TIMEOUT_VIDEO": "2s",
			"BRIDGE_TIMEOUT_CHAT": "2s", "BRIDGE_DUPLICATE_WINDOW": "3s",
		},
	})
	failFile := filepath.Join(t.TempDir(), "failpoint")
	r.child.setEnv("BRIDGE_TEST_FAILPOINT", string(point)+":"+failFile)
	r.startBridge()

	// Submitted together, so that they are delivered, and due for compaction, within one round or two.
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			ids[i] = r.submitViaBridgeKeyed("prompt", "prompt", fmt.Sprintf("compaction crash %d", i), keyOf(i))
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id == "" {
			t.Fatal("a submission was not accepted")
		}
	}
	r.waitSettled(30 * time.Second)

	ctx := natstest.CtxWithin(t, 3*time.Minute)
	hist := openHistory(t, ctx, r)
	var at string
	natstest.WaitFor(t, 30*time.Second, func() error {
		got, err := os.ReadFile(failFile)
		if err != nil {
			return err
		}
		at = string(got)
		return nil
	})
	// The half-done round as the failpoint leaves it; Errorf, so that the end-to-end checks run too.
	hot := r.hotJobs(t, ctx, ids)
	inHistory := historyHas(t, ctx, hist, ids)
	switch {
	case !inHistory[at]:
		t.Errorf("%s: job %s is not in the history", point, at)
	case point == jobs.CompactAfterHistory && !hot[at]:
		t.Errorf("%s: job %s has lost its JOBS record already", point, at)
	case point == jobs.CompactAfterRemove && hot[at]:
		t.Errorf("%s: job %s still has its JOBS record", point, at)
	}
	halfDone := 0 // hot jobs whose ids are in the history: the rest of the round
	for _, id := range ids {
		if hot[id] && inHistory[id] {
			halfDone++
		}
	}
	if halfDone == 0 {
		t.Errorf("%s: no job both hot and in the history: the kill would not land mid-round", point)
	}
	t.Logf("%s reached by %s: %d of %d jobs hot, %d of them in the history", point, at, len(hot), n, halfDone)
	r.child.kill()

	r.child.setEnv("BRIDGE_TEST_FAILPOINT", "")
	r.startBridge()
	r.waitNoHotState(t, 60*time.Second)
	for id, in := range historyHas(t, ctx, hist, ids) {
		if !in {
			t.Errorf("lost: job %s is neither hot nor in the history", id)
		}
	}

	wantNoIdempotencySubject(t, ctx, r)
	posts := r.sim.CallCount(simulator.EndpointSubmit)
	if id := r.submitViaBridgeKeyed("prompt", "prompt", "compaction crash 0", keyOf(0)); id != ids[0] {
		t.Errorf("keyed retry after the compaction: job %q, want %s", id, ids[0])
	}
	if got := r.sim.CallCount(simulator.EndpointSubmit) - posts; got != 0 {
		t.Errorf("keyed retry after the compaction: %d upstream POSTs, want 0", got)
	}

	gets := r.sim.CallCount(simulator.EndpointJob)
	for _, id := range ids {
		if code := r.postWebhook(id, "prompt", false); code != 200 {
			t.Fatalf("re-posted webhook of %s answered %d, want 200", id, code)
		}
	}
	res, err := ops.Replay(ctx, ops.ReplayConfig{JS: r.js, Log: zerolog.New(zerolog.NewTestWriter(t)), Name: "after-crash",
		Reverify: true, Replicas: nodes, Selection: ops.Selection{Stream: contract.Default.StreamWebhooks}})
	// Every stored webhook is republished; those of one job share one re-verification id, so the
	// duplicate window keeps one a job (more if the replay outlasts it: no matter, none is a result).
	if err != nil || !res.Done || res.Published-res.Duplicates < n {
		t.Fatalf("replay: %+v %v; want done, at least %d stored (one re-verification id a job)", res, err, n)
	}
	natstest.WaitFor(t, 30*time.Second, r.verifyDrained)
	if got := r.sim.CallCount(simulator.EndpointJob) - gets; got != 0 {
		t.Errorf("%d upstream GETs for the webhooks of compacted jobs, want 0", got)
	}
	if hot := r.hotJobs(t, ctx, ids); len(hot) != 0 {
		t.Errorf("%d compacted jobs got a JOBS record again, want 0", len(hot))
	}
	v := r.checkExactlyOnce()
	if v.owed != n || v.results != n || v.late != 0 {
		t.Errorf("owed %d, results %d, late %d; want %d, %d, 0", v.owed, v.results, v.late, n, n)
	}
}

// keyOf is the Idempotency-Key of the i-th job: every second one has one.
func keyOf(i int) string {
	if i%2 != 0 {
		return ""
	}
	return fmt.Sprintf("compaction-crash-%d", i)
}

// wantNoIdempotencySubject fails unless BRIDGE_IDEMPOTENCY's stream keeps no subject.
func wantNoIdempotencySubject(t *testing.T, ctx context.Context, r *rig) {
	t.Helper()
	s, err := r.js.Stream(ctx, contract.KVStream(contract.Default.BucketIdempotency))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.NumSubjects; n != 0 {
		t.Errorf("%d subjects in BRIDGE_IDEMPOTENCY after the compaction, want 0", n)
	}
}

// openHistory opens the history store of the bridge's BRIDGE_HISTORY bucket.
func openHistory(t *testing.T, ctx context.Context, r *rig) *history.Store {
	t.Helper()
	kv, err := r.js.KeyValue(ctx, contract.Default.BucketHistory)
	if err != nil {
		t.Fatal(err)
	}
	s, err := history.New(history.Config{KV: kv})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// historyHas reports for each of ids whether it is in the history.
func historyHas(t *testing.T, ctx context.Context, s *history.Store, ids []string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, id := range ids {
		in, err := s.Delivered(ctx, id)
		if err != nil {
			t.Fatalf("history lookup %s: %v", id, err)
		}
		out[id] = in
	}
	return out
}

// hotJobs reports which of ids have a JOBS record.
func (r *rig) hotJobs(t *testing.T, ctx context.Context, ids []string) map[string]bool {
	t.Helper()
	kv, err := r.js.KeyValue(ctx, contract.Default.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, id := range ids {
		_, err := kv.Get(ctx, id)
		switch {
		case err == nil:
			out[id] = true
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			t.Fatalf("JOBS %s: %v", id, err)
		}
	}
	return out
}

// waitNoHotState waits up to d until JOBS has no key and RESULTS no fence subject.
func (r *rig) waitNoHotState(t *testing.T, d time.Duration) {
	t.Helper()
	natstest.WaitFor(t, d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		js, err := r.js.Stream(ctx, contract.KVStream(contract.Default.BucketJobs))
		if err != nil {
			return err
		}
		ji, err := js.Info(ctx)
		if err != nil {
			return err
		}
		rs, err := r.js.Stream(ctx, contract.Default.StreamResults)
		if err != nil {
			return err
		}
		ri, err := rs.Info(ctx, jetstream.WithSubjectFilter(contract.Default.SubjectResultFence+">"))
		if err != nil {
			return err
		}
		if ji.State.NumSubjects != 0 || len(ri.State.Subjects) != 0 {
			return fmt.Errorf("%d JOBS keys and %d fences, want none", ji.State.NumSubjects, len(ri.State.Subjects))
		}
		return nil
	})
}
