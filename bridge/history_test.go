package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/promutil"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestReverifiedCompactedJobPublishesNothing runs the App's verify role, as the binary wires it, on a
// world's server: a job delivered and then compacted into the history, whose webhook comes back as a
// `bridge replay -reverify` copy (a Nats-Msg-Id of its own, so the stream keeps it inside the duplicate
// window), costs no upstream call and gets no second result: the App hands the history to its Deliverer.
func TestReverifiedCompactedJobPublishesNothing(t *testing.T) {
	e := testworld.New(t, testworld.WithSimulator(simulator.Config{}))
	cfg := testConfig(t)
	cfg.NATSURL, cfg.APIURL, cfg.Roles = e.Node.ClientURL(), e.Sim.URL(), []string{RoleVerify}
	startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)))
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "hello"})
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	e.WaitState(id, jobs.StateDelivered, 20*time.Second)
	e.WaitSettled(20 * time.Second)
	e.Compact(id)

	gets := e.Sim.CallCount(simulator.EndpointJob)
	e.PublishWebhook("prompt", id+".reverify.t", testworld.WebhookBody(id, false))
	e.WaitSettled(20 * time.Second)
	if n := e.Sim.CallCount(simulator.EndpointJob) - gets; n != 0 {
		t.Fatalf("%d upstream GETs for the re-verified webhook of a compacted job, want 0", n)
	}
	if n := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))[id]; n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	if n := len(e.StreamMsgs(contract.Default.StreamDeadLetter, "")); n != 0 {
		t.Fatalf("%d dead letters, want 0", n)
	}
}

// TestAppCompactsDeliveredJobs runs the App's verify and reconcile roles with a duplicate window of 1 s
// on a fresh store (layout 2): a job delivered by its webhook loses its JOBS key and fence once the window
// has passed (the reconcile lease holder's compactor), its id is in the history, and its webhook
// re-posted after that gives no second result.
func TestAppCompactsDeliveredJobs(t *testing.T) {
	e := testworld.New(t, testworld.WithSimulator(simulator.Config{}),
		testworld.WithProvision(natsx.ProvisionConfig{DuplicateWindow: time.Second, Retention: time.Hour}))
	a := startCompactingApp(t, e)
	id := deliverOne(t, e)
	waitNoHotState(t, e)
	ctx := natstest.CtxWithin(t, time.Minute)
	if in, err := e.History.Delivered(ctx, id); err != nil || !in {
		t.Fatalf("history lookup: %v %v, want true", in, err)
	}
	// The metrics show the state from the server: no hot record, one block of one 32-byte entry.
	fams := gather(t, a.Metrics().(*prometheus.Registry))
	if hot, blocks, bytes := promutil.Sum(fams, "bridge_jobs_hot_records"), promutil.Sum(fams, "bridge_history_blocks"),
		promutil.Sum(fams, "bridge_history_bytes"); fams["bridge_jobs_hot_records"] == nil || hot != 0 || blocks != 1 || bytes < 33 {
		t.Fatalf("metrics: %v hot records, %v history blocks of %v bytes; want 0, 1 and at least 33", hot, blocks, bytes)
	}

	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	e.WaitSettled(20 * time.Second)
	if n := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))[id]; n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	if n := len(e.StreamMsgs(contract.Default.StreamWebhooks, "")); n != 2 {
		t.Fatalf("%d webhooks stored, want 2 (the re-posted one outside the duplicate window)", n)
	}
	if _, _, err := e.Store.Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("record after the re-posted webhook: %v, want ErrNotFound (no hot record again)", err)
	}
}

// TestAppHoldsCompactionOnTheEarlierLayout: on a store the earlier release made (JOBS at layout 1), the
// App keeps delivered jobs' tombstones and fences, for a process of that release may run beside it, and
// counts its rounds as held; after natsx.UpgradeLayout (bridge upgrade finalize) the running leader
// compacts them without a restart.
func TestAppHoldsCompactionOnTheEarlierLayout(t *testing.T) {
	e := testworld.New(t, testworld.WithSimulator(simulator.Config{}), testworld.WithEarlierLayout(),
		testworld.WithProvision(natsx.ProvisionConfig{DuplicateWindow: time.Second, Retention: time.Hour}))
	a := startCompactingApp(t, e)
	reg := a.Metrics().(*prometheus.Registry)
	id := deliverOne(t, e)
	held := testworld.Series{Name: "bridge_compact_rounds_total", Label: "result", Value: "held"}
	at := time.Now()
	natstest.WaitFor(t, 20*time.Second, func() error {
		if n := testworld.CounterValue(t, reg, held); n < 3 || time.Since(at) < 2*time.Second {
			return fmt.Errorf("%v held rounds", n)
		}
		return nil
	})
	ctx := natstest.CtxWithin(t, time.Minute)
	if rec, _, err := e.Store.Get(ctx, id); err != nil || rec.State != jobs.StateDelivered {
		t.Fatalf("record on the earlier layout, its window passed: %v %v, want the delivered tombstone", rec.State, err)
	}
	if in, err := e.History.Delivered(ctx, id); err != nil || in {
		t.Fatalf("history lookup on the earlier layout: %v %v, want false", in, err)
	}
	if from, err := natsx.UpgradeLayout(ctx, e.JS, contract.Default); err != nil || from != 1 {
		t.Fatalf("upgrade: from %d %v, want from 1", from, err)
	}
	waitNoHotState(t, e)
	if in, err := e.History.Delivered(ctx, id); err != nil || !in {
		t.Fatalf("history lookup after the upgrade: %v %v, want true", in, err)
	}
}

// startCompactingApp starts the verify and reconcile roles on e (every node of its topology, at its
// replicas) with short deadlines, a duplicate window of 1 s and polls every 200 ms, so that a delivered
// job is due for compaction within about 2 s; mods adjust the configuration before it starts.
func startCompactingApp(t *testing.T, e *testworld.World, mods ...func(*Config)) *App {
	cfg := testConfig(t)
	cfg.NATSURL, cfg.APIURL, cfg.Roles = e.URLs, e.Sim.URL(), []string{RoleVerify, RoleReconcile}
	cfg.Replicas = len(e.Nodes)
	cfg.TimeoutPrompt, cfg.TimeoutImage, cfg.TimeoutVideo, cfg.TimeoutChat = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
	cfg.DuplicateWindow, cfg.PollInterval = time.Second, 200*time.Millisecond
	for _, m := range mods {
		m(&cfg)
	}
	return startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)))
}

// deliverOne submits a prompt job, posts its webhook and waits until its result is out.
func deliverOne(t *testing.T, e *testworld.World) string {
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "hello"})
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	e.WaitState(id, jobs.StateDelivered, 20*time.Second)
	e.WaitSettled(20 * time.Second)
	return id
}

// waitNoHotState waits until JOBS has no key and RESULTS no fence.
func waitNoHotState(t *testing.T, e *testworld.World) {
	waitNoHotStateWithin(t, e, 20*time.Second)
}

// waitNoHotStateWithin waits up to d until JOBS has no key and RESULTS no fence.
func waitNoHotStateWithin(t *testing.T, e *testworld.World, d time.Duration) {
	waitHotState(t, e, 0, 0, d)
}

// waitHotState waits up to d until JOBS has keys keys and RESULTS fences fence subjects.
func waitHotState(t *testing.T, e *testworld.World, keys, fences int, d time.Duration) {
	t.Helper()
	ctx := natstest.CtxWithin(t, d+time.Minute)
	natstest.WaitFor(t, d, func() error {
		ji, err := e.Res.JobsStream.Info(ctx)
		if err != nil {
			return err
		}
		ri, err := e.Res.Results.Info(ctx, jetstream.WithSubjectFilter(contract.Default.SubjectResultFence+">"))
		if err != nil {
			return err
		}
		if ji.State.NumSubjects != uint64(keys) || len(ri.State.Subjects) != fences {
			return fmt.Errorf("%d JOBS keys and %d fences, want %d and %d", ji.State.NumSubjects, len(ri.State.Subjects), keys, fences)
		}
		return nil
	})
}

// gather is reg's metric families by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

var stateJobs = flag.Int("state.jobs", defaultStateJobs, "TestStateFollowsTheWorkInFlight: delivered jobs written before the bridge starts (default 30,000; 2,000 under -race)")

// TestStateFollowsTheWorkInFlight is issue 22's "done when", on the embedded default's layout: N delivered
// jobs (30,000, or 2,000 under -race; -state.jobs to change) are written as the bridge leaves them, each a JOBS record delivered
// an hour ago, a result fence and a result in RESULTS, and a webhook in WEBHOOKS. The App's reconcile role
// compacts them; then, within BRIDGE_RETENTION (30 s here: the results and webhooks are all still
// there), the server keeps at most 0.01 subjects a delivered job across all the bridge's streams and
// buckets, and, once the retention has passed, at most 40 bytes a job, while every job is in the history.
// Subjects and bytes are the sums of State.NumSubjects and State.Bytes. The jobs are written straight into
// the store; TestSubmittedStateFollowsTheWorkInFlight counts jobs that come through the submit service.
func TestStateFollowsTheWorkInFlight(t *testing.T) {
	const retention = 30 * time.Second
	n := *stateJobs
	e := testworld.New(t, testworld.WithSimulator(simulator.Config{}),
		testworld.WithProvision(natsx.ProvisionConfig{DuplicateWindow: time.Second, Retention: retention}))
	ctx := natstest.CtxWithin(t, 5*time.Minute)
	written := time.Now()
	ids := writeDelivered(t, ctx, e, n)

	cfg := testConfig(t)
	cfg.NATSURL, cfg.APIURL, cfg.Roles = e.Node.ClientURL(), e.Sim.URL(), []string{RoleReconcile}
	cfg.DuplicateWindow, cfg.Retention, cfg.PollInterval = time.Second, retention, 200*time.Millisecond
	cfg.TimeoutPrompt, cfg.TimeoutImage, cfg.TimeoutVideo, cfg.TimeoutChat = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
	start := time.Now()
	startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	waitNoHotStateWithin(t, e, 30*time.Second+time.Duration(n)*4*time.Millisecond) // 9.9 s for 30,000 measured, without -race
	compacted := time.Since(start)
	subjects, _ := accountState(t, ctx, e)
	if time.Since(written) >= retention {
		t.Fatalf("compaction took %v, past the retention of %v: the subjects were not counted within it", compacted, retention)
	}
	t.Logf("%d delivered jobs compacted in %v; %d subjects (%.5f a job)", n, compacted.Round(time.Millisecond), subjects, float64(subjects)/float64(n))
	if float64(subjects) > 0.01*float64(n) {
		t.Errorf("%d subjects for %d delivered jobs, want at most 0.01 a job", subjects, n)
	}

	natstest.WaitFor(t, retention+time.Minute, func() error {
		if _, bytes := accountState(t, ctx, e); float64(bytes) > 40*float64(n) {
			return fmt.Errorf("%d bytes for %d delivered jobs (%.1f a job), want at most 40 a job", bytes, n, float64(bytes)/float64(n))
		}
		return nil
	})
	_, bytes := accountState(t, ctx, e)
	t.Logf("after the retention: %d bytes (%.1f a job)", bytes, float64(bytes)/float64(n))
	for i, id := range ids {
		if i%97 != 0 { // a sample: a lookup is a few block reads
			continue
		}
		if in, err := e.History.Delivered(ctx, id); err != nil || !in {
			t.Fatalf("history lookup of delivered job %s: %v %v, want true", id, in, err)
		}
	}
	if c, err := e.History.Census(ctx); err != nil || c.IDs != uint64(n) {
		t.Fatalf("history census: %+v %v, want %d ids", c, err, n)
	}
}

// writeDelivered writes n delivered jobs as the bridge leaves them: a JOBS record delivered an hour ago,
// its primary fence and result in RESULTS, and its webhook in WEBHOOKS. It returns their ids.
func writeDelivered(t *testing.T, ctx context.Context, e *testworld.World, n int) []string {
	t.Helper()
	at := time.Now().Add(-time.Hour).UTC()
	ids := make([]string, n)
	for i := range ids {
		id := uuid.NewString()
		ids[i] = id
		rec := jobs.Record{JobID: id, Modality: "prompt", State: jobs.StateDelivered, Origin: jobs.OriginSubmit,
			SubmittedAt: at.Add(-time.Second), Deadline: at.Add(time.Minute), Attempts: 1, Source: contract.SourceWebhook,
			ResultSubject: contract.Default.ResultSubject("prompt"), ResultSeq: uint64(2*i + 2), DeliveredAt: &at, LastStatus: "completed"}
		v, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		body := testworld.WebhookBody(id, false)
		for _, m := range []*nats.Msg{
			{Subject: contract.KVSubject(contract.Default.BucketJobs, id), Data: v},
			{Subject: contract.Default.ResultFenceSubject(id, false), Data: []byte(`{}`)},
			{Subject: contract.Default.ResultSubject("prompt"), Data: body, Header: nats.Header{jetstream.MsgIDHeader: {id}}},
			{Subject: contract.Default.WebhookSubject("prompt"), Data: body, Header: nats.Header{jetstream.MsgIDHeader: {id}}},
		} {
			if _, err := e.JS.PublishMsgAsync(m); err != nil {
				t.Fatal(err)
			}
		}
		if i%2_000 == 1_999 || i == n-1 {
			select {
			case <-e.JS.PublishAsyncComplete():
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
	}
	return ids
}

// accountState sums State.NumSubjects and State.Bytes over every stream of the account: the bridge's
// streams, and the streams under its KV buckets.
func accountState(t *testing.T, ctx context.Context, e *testworld.World) (subjects, bytes uint64) {
	t.Helper()
	l := e.JS.ListStreams(ctx)
	for info := range l.Info() {
		subjects += info.State.NumSubjects
		bytes += info.State.Bytes
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return subjects, bytes
}
