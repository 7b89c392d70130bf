package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
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
	if n := testworld.ResultIDs(t, e.StreamMsgs(contract.StreamResults, contract.SubjectResults+">"))[id]; n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	if n := len(e.StreamMsgs(contract.StreamDeadLetter, "")); n != 0 {
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
	startCompactingApp(t, e)
	id := deliverOne(t, e)
	waitNoHotState(t, e)
	ctx := natstest.CtxWithin(t, time.Minute)
	if in, err := e.History.Delivered(ctx, id); err != nil || !in {
		t.Fatalf("history lookup: %v %v, want true", in, err)
	}

	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	e.WaitSettled(20 * time.Second)
	if n := testworld.ResultIDs(t, e.StreamMsgs(contract.StreamResults, contract.SubjectResults+">"))[id]; n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	if n := len(e.StreamMsgs(contract.StreamWebhooks, "")); n != 2 {
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
	if from, err := natsx.UpgradeLayout(ctx, e.JS); err != nil || from != 1 {
		t.Fatalf("upgrade: from %d %v, want from 1", from, err)
	}
	waitNoHotState(t, e)
	if in, err := e.History.Delivered(ctx, id); err != nil || !in {
		t.Fatalf("history lookup after the upgrade: %v %v, want true", in, err)
	}
}

// startCompactingApp starts the verify and reconcile roles on e with short deadlines, a duplicate window
// of 1 s and polls every 200 ms, so that a delivered job is due for compaction within about 2 s.
func startCompactingApp(t *testing.T, e *testworld.World) *App {
	cfg := testConfig(t)
	cfg.NATSURL, cfg.APIURL, cfg.Roles = e.Node.ClientURL(), e.Sim.URL(), []string{RoleVerify, RoleReconcile}
	cfg.TimeoutPrompt, cfg.TimeoutImage, cfg.TimeoutVideo, cfg.TimeoutChat = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
	cfg.DuplicateWindow, cfg.PollInterval = time.Second, 200*time.Millisecond
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
	ctx := natstest.CtxWithin(t, time.Minute)
	natstest.WaitFor(t, 20*time.Second, func() error {
		ji, err := e.Res.JobsStream.Info(ctx)
		if err != nil {
			return err
		}
		ri, err := e.Res.Results.Info(ctx, jetstream.WithSubjectFilter(contract.SubjectResultFence+">"))
		if err != nil {
			return err
		}
		if ji.State.NumSubjects != 0 || len(ri.State.Subjects) != 0 {
			return fmt.Errorf("%d JOBS keys and %d fences, want none", ji.State.NumSubjects, len(ri.State.Subjects))
		}
		return nil
	})
}
