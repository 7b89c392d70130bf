package bridge

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/access"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/ops"
)

// connectAs connects to e's cluster as role's user (roleUsers). Each permission violation the connection
// meets, until the test ends, fails the test.
func connectAs(t *testing.T, e *testworld.World, role access.Role) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	refused := make(chan error, 16)
	// Registered before the connection's close, so it runs after it: every violation has come by then.
	t.Cleanup(func() {
		for {
			select {
			case err := <-refused:
				t.Errorf("the %s user met a permission violation: %v", role, err)
			default:
				return
			}
		}
	})
	return natstest.Connect(t, e.URLs, nats.UserInfo(string(role), password(string(role))), violations{refused}.option())
}

// downstreamClient is a service using the bridge, connected as the downstream user, that listens on
// results.> from the start.
type downstreamClient struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	results *nats.Subscription
}

func newDownstreamClient(t *testing.T, e *testworld.World) *downstreamClient {
	t.Helper()
	nc, js := connectAs(t, e, access.Downstream)
	results, err := nc.SubscribeSync("results.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &downstreamClient{nc: nc, js: js, results: results}
}

// submit requests moderate.<modality> with fields and returns the job's id.
func (d *downstreamClient) submit(t *testing.T, modality string, fields map[string]string) string {
	t.Helper()
	rep, raw, err := ops.Submit(natstest.CtxWithin(t, 20*time.Second), d.nc, ops.SubmitRequest{Modality: modality, Fields: fields})
	if err != nil {
		t.Fatalf("downstream submit on moderate.%s: %v (%s)", modality, err, raw)
	}
	return rep.JobID
}

// readResult reads job id's result as a downstream service does: on its results.> subscription,
// through an ordered consumer of RESULTS, through a durable consumer of RESULTS whose delivery it
// acknowledges (and the server confirms), and over jobs.status.
func (d *downstreamClient) readResult(t *testing.T, id string) {
	t.Helper()
	ctx := natstest.CtxWithin(t, 30*time.Second)
	for got := ""; got != id; {
		m, err := d.results.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("downstream results.>: %v", err)
		}
		got, _ = jobIDOf(m.Data)
	}
	ordered, err := d.js.OrderedConsumer(ctx, "RESULTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"results.>"}})
	if err != nil {
		t.Fatalf("downstream ordered consumer of RESULTS: %v", err)
	}
	nextOf(t, ordered, id, false)
	durable, err := d.js.CreateOrUpdateConsumer(ctx, "RESULTS", jetstream.ConsumerConfig{Durable: "downstream-app",
		FilterSubject: "results.>", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("downstream durable consumer of RESULTS: %v", err)
	}
	nextOf(t, durable, id, true)
	reply, err := ops.JobStatus(ctx, d.nc, contract.Names{}, id)
	if err != nil || !ops.HasResult(reply) {
		t.Fatalf("downstream jobs.status of %s: %s (%v), want its result", id, reply, err)
	}
}

// nextOf reads cons until job id's result; with ack, it acknowledges each message read and waits for the
// server's confirmation. A consumer just made on a cluster may not be known yet to the server the client
// is on ("no responders"): like any downstream service, it asks again, within the same 10 s.
func nextOf(t *testing.T, cons jetstream.Consumer, id string, ack bool) {
	t.Helper()
	for got := ""; got != id; {
		var m jetstream.Msg
		natstest.WaitFor(t, 10*time.Second, func() (err error) {
			m, err = cons.Next(jetstream.FetchMaxWait(10 * time.Second))
			if err != nil && !errors.Is(err, nats.ErrNoResponders) {
				t.Fatalf("downstream read of RESULTS: %v", err)
			}
			return err
		})
		got, _ = jobIDOf(m.Data())
		if ack {
			if err := m.DoubleAck(natstest.CtxWithin(t, 10*time.Second)); err != nil {
				t.Fatalf("downstream ack: %v", err)
			}
		}
	}
}

// runOpsCommands does, as the ops user, what bridge status, job, deadletter list and redrive, replay
// (of RESULTS, and -reverify of WEBHOOKS), upgrade status and finalize (at layout 2 already) and
// provision -check do, on e's cluster after job delivered was delivered and the forged webhook of job
// forged was dead-lettered; each must succeed.
func runOpsCommands(t *testing.T, e *testworld.World, delivered, forged string) {
	t.Helper()
	nc, js := connectAs(t, e, access.Ops)
	ctx := natstest.CtxWithin(t, 30*time.Second)
	if _, err := ops.Status(ctx, ops.StatusConfig{JS: js}); err != nil {
		t.Errorf("ops status: %v", err)
	}
	if reply, err := ops.JobStatus(ctx, nc, contract.Names{}, delivered); err != nil || !ops.HasResult(reply) {
		t.Errorf("ops job %s: %s (%v)", delivered, reply, err)
	}
	if _, err := ops.SummarizeDeadLetters(ctx, js, contract.Names{}); err != nil {
		t.Errorf("ops deadletter summary: %v", err)
	}
	dl := ops.DeadLetterFilter{JobIDs: []string{forged}}
	if dls, err := ops.ListDeadLetters(ctx, js, dl); err != nil || len(dls) != 1 {
		t.Errorf("ops deadletter list: %d dead letters (%v), want 1", len(dls), err)
	}
	items, err := ops.Redrive(ctx, ops.RedriveConfig{JS: js, Log: zerolog.Nop(), Filter: dl, Delete: true})
	if err != nil || len(items) != 1 || items[0].Action != "redriven" {
		t.Errorf("ops deadletter redrive: %+v (%v), want one redriven", items, err)
	}
	res, err := ops.Replay(ctx, ops.ReplayConfig{JS: js, Log: zerolog.Nop(), Name: "least-privilege", Replicas: 3,
		Idle: 200 * time.Millisecond, Selection: ops.Selection{Stream: "RESULTS", JobIDs: []string{delivered}}})
	if err != nil || res.Published != 1 || !res.Done {
		t.Errorf("ops replay: %+v (%v), want one result published and done", res, err)
	}
	rv, err := ops.Replay(ctx, ops.ReplayConfig{JS: js, Log: zerolog.Nop(), Name: "least-privilege-reverify", Replicas: 3,
		Reverify: true, Idle: 200 * time.Millisecond, Selection: ops.Selection{Stream: "WEBHOOKS", JobIDs: []string{delivered}}})
	if err != nil || rv.Published != 1 || !rv.Done {
		t.Errorf("ops replay -reverify: %+v (%v), want one webhook put back and done", rv, err)
	}
	if from, err := natsx.UpgradeLayout(ctx, js, contract.Default); err != nil || from != 2 {
		t.Errorf("ops upgrade finalize: from layout %d (%v), want 2 already", from, err)
	}
	stream, err := js.Stream(ctx, "KV_JOBS")
	if err != nil {
		t.Fatalf("ops upgrade status: %v", err)
	}
	if layout, err := natsx.JobsLayout(ctx, stream); err != nil || layout != 2 {
		t.Errorf("ops upgrade status: layout %d (%v), want 2", layout, err)
	}
	cfg := Config{MaxBody: 64 << 10, Retention: time.Hour, Replicas: 3}
	rolesTestTimings(&cfg)
	if _, err := natsx.Check(ctx, js, cfg.ProvisionConfig()); err != nil {
		t.Errorf("ops provision -check: %v", err)
	}
}
