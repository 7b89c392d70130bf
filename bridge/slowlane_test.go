package bridge

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream/simulator"
)

// oldLaneMsg is a webhook as the verifier of the earlier layout moved it to its slow lane in DEADLETTER.
func oldLaneMsg(id string, webhookSeq int) *nats.Msg {
	m := nats.NewMsg("deadletter.unknown_job")
	m.Data = testworld.WebhookBody(id, false)
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.unknown_job.WEBHOOKS.%d", id, webhookSeq))
	m.Header.Set(contract.HeaderReason, "unknown_job")
	m.Header.Set(contract.HeaderAttempts, "1")
	m.Header.Set(contract.HeaderOriginalSubject, "webhooks.prompt")
	m.Header.Set(contract.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	return m
}

// TestOldSlowLaneVerifiedOnceAfterUpgrade starts a bridge on a store of the earlier layout, whose slow
// lane was deadletter.unknown_job in DEADLETTER (consumer verify-unknown there), holding webhooks of jobs
// submitted elsewhere and a forged one: one the old lane handled, one in its flight, one whose move to
// SLOWLANE a crash interrupted, the rest not yet delivered. Every waiting webhook is verified exactly
// once (one result, from a GET or an export round, never two GETs; the forged one a not_found dead
// letter), the handled one not again, and the old lane is gone from DEADLETTER.
func TestOldSlowLaneVerifiedOnceAfterUpgrade(t *testing.T) {
	e := testworld.New(t, testworld.WithSimulator(simulator.Config{}), testworld.WithHookReceiver())
	ctx := natstest.CtxWithin(t, 30*time.Second)
	var foreign []string
	for i := range 4 {
		foreign = append(foreign, e.SubmitDirect("prompt", map[string]string{"prompt": fmt.Sprint("elsewhere ", i)}))
	}
	forged := uuid.NewString()
	for i, id := range append(foreign, forged) {
		if _, err := e.JS.PublishMsg(ctx, oldLaneMsg(id, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	old, err := e.JS.CreateConsumer(ctx, "DEADLETTER", jetstream.ConsumerConfig{Durable: "verify-unknown",
		FilterSubject: "deadletter.unknown_job", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // foreign[0] handled, foreign[1] in flight
		m, err := old.Next()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			_ = m.DoubleAck(ctx)
		}
	}
	interrupted := oldLaneMsg(foreign[2], 3)
	interrupted.Subject = "slowlane.unknown_job"
	if _, err := e.JS.PublishMsg(ctx, interrupted); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	cfg.NATSURL, cfg.APIURL, cfg.Roles = e.Node.ClientURL(), e.Sim.URL(), []string{RoleVerify}
	startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))

	results := e.WaitResults("results.>", len(foreign)-1, 30*time.Second)
	e.WaitLaneSettled("slowlane.unknown_job", 30*time.Second)
	natstest.WaitFor(t, 10*time.Second, func() error {
		if _, err := e.JS.Consumer(ctx, "DEADLETTER", "verify-unknown"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("old slow-lane consumer: %v, want it removed", err)
		}
		return nil
	})
	ids := testworld.ResultIDs(t, results)
	if len(ids) != len(foreign)-1 || ids[foreign[0]] != 0 {
		t.Fatalf("results %v: want one for each waiting foreign job, none for the handled %s", ids, foreign[0])
	}
	gets := map[string]int{}
	for _, c := range e.Sim.Calls(simulator.EndpointJob) {
		gets[c.Path[strings.LastIndexByte(c.Path, '/')+1:]]++
	}
	for _, id := range append(foreign[1:], forged) {
		if gets[id] > 1 || id != forged && ids[id] != 1 {
			t.Fatalf("job %s: %d GETs and %d results, want at most one GET and one result (forged: no result)", id, gets[id], ids[id])
		}
	}
	if gets[foreign[0]] != 0 {
		t.Fatalf("the job the old lane handled was fetched %d times again", gets[foreign[0]])
	}
	dl := e.StreamMsgs("DEADLETTER", "")
	if len(dl) != 1 || dl[0].Subject != "deadletter.not_found" || !strings.Contains(string(dl[0].Data), forged) {
		t.Fatalf("DEADLETTER holds %d messages, want the forged webhook's not_found dead letter only", len(dl))
	}
}

// TestUnknownBacklogGuardReadsTheSlowLane: without a token, ingest refuses webhooks of jobs it does not
// track while BRIDGE_UNKNOWN_BACKLOG webhooks wait in SLOWLANE, and takes them again once the lane has
// room.
func TestUnknownBacklogGuardReadsTheSlowLane(t *testing.T) {
	cfg := testConfig(t)
	backlog := 2
	cfg.Roles, cfg.UnknownBacklog = []string{RoleIngest}, &backlog
	a := startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	_, js := natstest.Connect(t, cfg.NATSURL)
	ctx := natstest.CtxWithin(t, 30*time.Second)
	post := func() int {
		body := strings.NewReader(fmt.Sprintf(`{"job_id":%q,"status":"completed"}`, uuid.NewString()))
		resp, err := http.Post("http://"+a.Addr().String()+"/webhook/prompt", "application/json", body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range backlog {
		m := nats.NewMsg("slowlane.unknown_job")
		m.Data = []byte(`{}`)
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprint("waiting-", i))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if code := post(); code != http.StatusServiceUnavailable {
			return fmt.Errorf("unknown job's webhook answered %d with %d in the slow lane, want 503", code, backlog)
		}
		return nil
	})
	lane, err := js.Stream(ctx, "SLOWLANE")
	if err != nil {
		t.Fatal(err)
	}
	if err := lane.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if code := post(); code != http.StatusOK {
			return fmt.Errorf("unknown job's webhook answered %d with the slow lane empty, want 200", code)
		}
		return nil
	})
}
