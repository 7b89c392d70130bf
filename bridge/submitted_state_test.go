package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"
)

// submittedJobs is how many jobs TestSubmittedStateFollowsTheWorkInFlight submits, every second one with
// an Idempotency-Key.
const submittedJobs = 200

// TestSubmittedStateFollowsTheWorkInFlight is TestStateFollowsTheWorkInFlight for jobs that come through
// the submit service, as they do in real use: 200 moderate.prompt requests, every second one with an
// Idempotency-Key, served by the App's submit and reconcile roles (poll-only: the reconciler delivers
// each result), with a duplicate window of 2 s. Once every job is compacted, the subjects the requests
// added across all the bridge's streams and buckets, BRIDGE_IDEMPOTENCY's included, are at most 0.01 a
// job: an ended intent and a compacted job's Idempotency-Key leave none. (The baseline is taken after
// one keyed job went the whole way, so that the subjects every bridge has once, such as results.prompt,
// the history's root block and the lease, are in it.) Then a keyed retry gets the same job_id without a
// second upstream POST and leaves no subject, and, once RESULTS no longer holds the job's result, a
// keyed retry gets 409 IDEMPOTENCY_EXPIRED.
func TestSubmittedStateFollowsTheWorkInFlight(t *testing.T) {
	const window = 2 * time.Second
	e := testworld.New(t, testworld.WithSimulator(simulator.Config{}),
		testworld.WithProvision(natsx.ProvisionConfig{DuplicateWindow: window, Retention: time.Hour}))
	cfg := testConfig(t)
	cfg.NATSURL, cfg.APIURL, cfg.Roles = e.Node.ClientURL(), e.Sim.URL(), []string{RoleSubmit, RoleReconcile}
	// Deadlines within the window, as the configuration requires, and long enough for a poll to deliver.
	const deadline = 1500 * time.Millisecond
	cfg.DuplicateWindow, cfg.PollInterval, cfg.APIRPM = window, 200*time.Millisecond, 60000
	cfg.TimeoutPrompt, cfg.TimeoutImage, cfg.TimeoutVideo, cfg.TimeoutChat = deadline, deadline, deadline, deadline
	a := startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	waitReady(t, "http://"+a.Addr().String())
	ctx := natstest.CtxWithin(t, 2*time.Minute)
	idemStream := contract.KVStream(contract.Default.BucketIdempotency)

	submitKeyed(t, e.NC, "warm-up", "warm-up")
	waitNoHotStateWithin(t, e, 30*time.Second)
	before := streamSubjects(t, ctx, e)

	ids := map[string]string{} // key → job_id
	for i := range submittedJobs {
		key := ""
		if i%2 == 0 {
			key = fmt.Sprintf("key-%d", i)
		}
		ids[key] = submitKeyed(t, e.NC, fmt.Sprintf("prompt %d", i), key)
	}
	waitNoHotStateWithin(t, e, 60*time.Second)
	after := streamSubjects(t, ctx, e)
	added := 0
	for s, n := range after {
		if d := n - before[s]; d != 0 {
			t.Logf("%s: %+d subjects", s, d)
			added += d
		}
	}
	t.Logf("%d submitted jobs compacted: %d subjects added (%.3f a job)", submittedJobs, added, float64(added)/submittedJobs)
	if float64(added) > 0.01*submittedJobs {
		t.Errorf("%d subjects added for %d submitted jobs (%d in KV_BRIDGE_IDEMPOTENCY), want at most 0.01 a job",
			added, submittedJobs, after[idemStream]-before[idemStream])
	}

	posts := e.Sim.CallCount(simulator.EndpointSubmit)
	t.Run("KeyedRetryAfterCompaction", func(t *testing.T) {
		rep, _, err := ops.Submit(ctx, e.NC, ops.SubmitRequest{Modality: "prompt", Fields: map[string]string{"prompt": "prompt 0"}, IdempotencyKey: "key-0"})
		if err != nil || rep.JobID != ids["key-0"] || rep.Status != "queued" {
			t.Fatalf("keyed retry after compaction: %+v %v, want the first submission's job %s, status queued", rep, err, ids["key-0"])
		}
		if n := e.Sim.CallCount(simulator.EndpointSubmit) - posts; n != 0 {
			t.Fatalf("keyed retry after compaction: %d upstream POSTs, want 0", n)
		}
		if n := streamSubjects(t, ctx, e)[idemStream]; n != 0 {
			t.Fatalf("after the keyed retry: %d subjects in BRIDGE_IDEMPOTENCY, want 0", n)
		}
	})
	t.Run("KeyedRetryPastRetention", func(t *testing.T) {
		if err := e.Res.Results.Purge(ctx); err != nil { // as retention does, after BRIDGE_RETENTION
			t.Fatal(err)
		}
		_, _, err := ops.Submit(ctx, e.NC, ops.SubmitRequest{Modality: "prompt", Fields: map[string]string{"prompt": "prompt 2"}, IdempotencyKey: "key-2"})
		se, ok := errors.AsType[*ops.ServiceError](err)
		if !ok || se.Code != "409" || !strings.HasPrefix(se.Description, "IDEMPOTENCY_EXPIRED: the job of this Idempotency-Key was delivered at ") ||
			!strings.HasSuffix(se.Description, "use a new key to submit again") {
			t.Fatalf("keyed retry once the result is past retention: %v, want 409 IDEMPOTENCY_EXPIRED", err)
		}
		if n := e.Sim.CallCount(simulator.EndpointSubmit) - posts; n != 0 {
			t.Fatalf("expired keyed retry: %d upstream POSTs, want 0", n)
		}
	})
}

// submitKeyed submits a prompt job (with the Idempotency-Key key, unless empty) and returns its id.
func submitKeyed(t *testing.T, nc *nats.Conn, prompt, key string) string {
	t.Helper()
	rep, _, err := ops.Submit(natstest.CtxWithin(t, 10*time.Second), nc,
		ops.SubmitRequest{Modality: "prompt", Fields: map[string]string{"prompt": prompt}, IdempotencyKey: key})
	if err != nil {
		t.Fatalf("submission %q (key %q): %v", prompt, key, err)
	}
	return rep.JobID
}

// streamSubjects is State.NumSubjects of every stream of the account, by name: the bridge's streams and
// the streams under its KV buckets.
func streamSubjects(t *testing.T, ctx context.Context, e *testworld.World) map[string]int {
	t.Helper()
	out := map[string]int{}
	l := e.JS.ListStreams(ctx)
	for info := range l.Info() {
		out[info.Config.Name] = int(info.State.NumSubjects)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
