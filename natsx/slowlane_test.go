package natsx_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/natsx"
)

// TestProvisionSlowLaneIsAWorkQueue: SLOWLANE, the verifier's slow lane, holds a webhook only until it is
// acknowledged, and has the other streams' limits.
func TestProvisionSlowLaneIsAWorkQueue(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	res, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{DuplicateWindow: 30 * time.Minute, Retention: 48 * time.Hour,
		MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	info, err := res.SlowLane.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Name != "SLOWLANE" || len(c.Subjects) != 1 || c.Subjects[0] != "slowlane.>" || c.Retention != jetstream.WorkQueuePolicy ||
		c.MaxAge != 48*time.Hour || c.MaxBytes != 1<<30 || c.Discard != jetstream.DiscardNew || c.Duplicates != 30*time.Minute ||
		c.Storage != jetstream.FileStorage || c.Replicas != 1 {
		t.Fatalf("SLOWLANE config %+v", c)
	}
	if _, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{}); err != nil {
		t.Fatalf("provision again: %v", err)
	}
}

// oldLaneMsg is a webhook as the verifier of the earlier layout moved it to its slow lane in DEADLETTER.
func oldLaneMsg(id string, webhookSeq int) *nats.Msg {
	m := nats.NewMsg("deadletter.unknown_job")
	m.Data = fmt.Appendf(nil, `{"job_id":%q,"status":"completed"}`, id)
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.unknown_job.WEBHOOKS.%d", id, webhookSeq))
	m.Header.Set(contract.HeaderReason, "unknown_job")
	m.Header.Set(contract.HeaderAttempts, "1")
	m.Header.Set(contract.HeaderOriginalSubject, "webhooks.prompt")
	m.Header.Set(contract.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	m.Header.Set(contract.HeaderRemoteAddr, "203.0.113.7:4711")
	return m
}

// TestMoveOldSlowLaneIsCrashSafe upgrades a store of the earlier layout: the webhooks its slow lane
// (verify-unknown on DEADLETTER) had not acknowledged move to SLOWLANE once each, with their Nats-Msg-Id
// and headers, also one whose move a crash interrupted after the publish; one it had handled does not;
// DEADLETTER keeps its real dead letters only; the old consumer is gone, and a second run is a no-op.
func TestMoveOldSlowLaneIsCrashSafe(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.CtxWithin(t, 30*time.Second)
	if _, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 5) // ids[0] handled by the old lane, ids[1] in its flight, the rest undelivered
	for i := range ids {
		ids[i] = uuid.NewString()
		if _, err := js.PublishMsg(ctx, oldLaneMsg(ids[i], i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "deadletter.not_found", Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	old, err := js.CreateConsumer(ctx, "DEADLETTER", jetstream.ConsumerConfig{Durable: "verify-unknown",
		FilterSubject: "deadletter.unknown_job", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		m, err := old.Next()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			_ = m.DoubleAck(ctx)
		}
	}
	// A move of ids[2] was cut short after its publish.
	interrupted := oldLaneMsg(ids[2], 3)
	interrupted.Subject = "slowlane.unknown_job"
	interrupted.Header.Del(contract.HeaderReason)
	if _, err := js.PublishMsg(ctx, interrupted); err != nil {
		t.Fatal(err)
	}

	log := zerolog.New(zerolog.NewTestWriter(t))
	if err := natsx.MoveOldSlowLane(ctx, js, log); err != nil || ctx.Err() != nil {
		t.Fatalf("move: %v (ctx %v)", err, ctx.Err())
	}
	lane := natstest.StreamMsgs(t, js, "SLOWLANE")
	if len(lane) != 4 {
		t.Fatalf("%d webhooks in SLOWLANE, want 4 (all but the one handled)", len(lane))
	}
	waiting := map[string]bool{}
	for i, id := range ids[1:] {
		waiting[fmt.Sprintf("%s.unknown_job.WEBHOOKS.%d", id, i+2)] = true
	}
	for _, m := range lane {
		if m.Subject != "slowlane.unknown_job" || !waiting[m.Header.Get(jetstream.MsgIDHeader)] ||
			m.Header.Get(contract.HeaderReason) != "" || m.Header.Get(contract.HeaderAttempts) != "1" ||
			m.Header.Get(contract.HeaderOriginalSubject) != "webhooks.prompt" || m.Header.Get(contract.HeaderRemoteAddr) != "203.0.113.7:4711" {
			t.Fatalf("lane message %d: %s %v", m.Sequence, m.Subject, m.Header)
		}
		delete(waiting, m.Header.Get(jetstream.MsgIDHeader)) // a second copy fails above
	}
	dl := natstest.StreamMsgs(t, js, "DEADLETTER")
	if len(dl) != 1 || dl[0].Subject != "deadletter.not_found" {
		t.Fatalf("DEADLETTER holds %d messages, want the one not_found dead letter", len(dl))
	}
	if _, err := js.Consumer(ctx, "DEADLETTER", "verify-unknown"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("old consumer: %v, want it deleted", err)
	}
	if err := natsx.MoveOldSlowLane(ctx, js, log); err != nil {
		t.Fatalf("second move: %v", err)
	}
	if got := len(natstest.StreamMsgs(t, js, "SLOWLANE")); got != 4 {
		t.Fatalf("%d webhooks in SLOWLANE after a second run, want 4", got)
	}
}
