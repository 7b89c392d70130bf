package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// fetchWebhook stores a raw webhook as ingest would and fetches it back as the verifier's consumer
// would, unacknowledged, for decide.
func (e *env) fetchWebhook(t *testing.T, body []byte) jetstream.Msg {
	t.Helper()
	ctx := natstest.CtxWithin(t, 10*time.Second)
	ack, err := natsx.PublishMsg(ctx, e.JS, testworld.WebhookMsg("prompt", uuid.NewString(), body, "203.0.113.7:4711"))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := e.JS.OrderedConsumer(ctx, contract.Default.StreamWebhooks, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: ack.Sequence})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// TestDecideVerdicts is the table of every verdict decide gives, against a real server and simulator;
// decide never acknowledges, so each case reads only the verdict and the upstream calls it cost.
func TestDecideVerdicts(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 3, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	body := testworld.WebhookBody
	unlimited := e.UnknownBudget(60000, 0) // cases not about the unknown-job budget never wait for it
	completed := func(t *testing.T) string { return e.SubmitDirect("prompt", map[string]string{"prompt": "decide"}) }
	record := func(t *testing.T, id string, st jobs.State) {
		now := time.Now().UTC()
		if _, err := e.Deliverer.Store().Create(natstest.CtxWithin(t, 5*time.Second), jobs.Record{JobID: id, Modality: "prompt",
			State: st, Origin: jobs.OriginSubmit, SubmittedAt: now, Deadline: now.Add(time.Hour), ResultSeq: 1}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name       string
		cfg        func(*Config)
		slow       bool
		stopped    bool
		fault      *simulator.Fault
		webhook    func(t *testing.T) []byte
		wantAction action
		wantOut    string
		wantReason string
		wantCalls  int // GET /job calls the decision cost
	}{
		{name: "malformed body", webhook: func(*testing.T) []byte { return []byte(`{"nope":1}`) },
			wantAction: actDeadLetter, wantOut: "malformed", wantReason: "malformed"},
		{name: "result out already", webhook: func(t *testing.T) []byte {
			id := uuid.NewString()
			record(t, id, jobs.StateDelivered)
			return body(id, false)
		}, wantAction: actAck, wantOut: "already_delivered"},
		{name: "terminal job published", webhook: func(t *testing.T) []byte {
			id := completed(t)
			record(t, id, jobs.StatePending)
			return body(id, false)
		}, wantAction: actAck, wantOut: "published", wantCalls: 1},
		{name: "job not finished", webhook: func(t *testing.T) []byte {
			e.Sim.SetHoldNew(true)
			defer e.Sim.SetHoldNew(false)
			sub, err := e.API.Submit(natstest.CtxWithin(t, 5*time.Second), "prompt", map[string]string{"prompt": "held"}, "")
			if err != nil {
				t.Fatal(err)
			}
			record(t, sub.JobID, jobs.StatePending)
			return body(sub.JobID, false)
		}, wantAction: actRetry, wantOut: "not_terminal", wantCalls: 1},
		{name: "upstream does not know it", webhook: func(t *testing.T) []byte {
			id := uuid.NewString()
			record(t, id, jobs.StatePending)
			return body(id, false)
		}, wantAction: actDeadLetter, wantOut: "not_found", wantReason: "not_found", wantCalls: 1},
		{name: "upstream unavailable", fault: &simulator.Fault{ErrorRate: 1, ErrorStatus: 503}, webhook: func(t *testing.T) []byte {
			id := uuid.NewString()
			record(t, id, jobs.StatePending)
			return body(id, false)
		}, wantAction: actRetry, wantOut: "retry", wantCalls: 1},
		{name: "upstream refuses the key", fault: &simulator.Fault{ErrorRate: 1, ErrorStatus: 401}, webhook: func(t *testing.T) []byte {
			id := uuid.NewString()
			record(t, id, jobs.StatePending)
			return body(id, false)
		}, wantAction: actRetry, wantOut: "auth_paused", wantCalls: 1},
		{name: "unknown job, verification off", cfg: func(c *Config) { c.UnknownRPM = UnknownOff },
			webhook:    func(*testing.T) []byte { return body(uuid.NewString(), false) },
			wantAction: actDeadLetter, wantOut: "unknown_shed", wantReason: "unknown_job"},
		{name: "unknown job, budget busy on the main lane", cfg: func(c *Config) { c.UnknownRPM, c.UnknownLimiter = 1, e.UnknownBudget(1, 1) },
			webhook:    func(*testing.T) []byte { return body(uuid.NewString(), false) },
			wantAction: actLane, wantOut: "unknown_laned"},
		{name: "unknown job on the slow lane, stopping", cfg: func(c *Config) { c.UnknownRPM, c.UnknownLimiter = 1, e.UnknownBudget(1, 1) },
			slow: true, stopped: true, webhook: func(*testing.T) []byte { return body(uuid.NewString(), false) },
			wantAction: actGiveBack, wantOut: "shutdown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{JS: e.JS, API: e.API, Deliverer: e.Deliverer, Log: e.Log, UnknownRPM: 60000,
				UnknownLimiter: unlimited}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			v, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if v.unknownBudget != nil && cfg.UnknownRPM == 1 {
				v.unknownBudget.take() // the one token is spent
			}
			msg := e.fetchWebhook(t, tt.webhook(t))
			if tt.fault != nil {
				e.Sim.SetFault(simulator.EndpointJob, *tt.fault)
				defer e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{})
			}
			l := v.lanes()[0]
			if tt.slow {
				l = v.lanes()[1]
			}
			if tt.stopped {
				stopping := make(chan struct{})
				close(stopping)
				l.stopping = stopping
			}
			calls := e.Sim.CallCount(simulator.EndpointJob)
			vd := v.decide(natstest.CtxWithin(t, 10*time.Second), v.newDelivery(msg, l))
			if vd.action != tt.wantAction || vd.outcome.String() != tt.wantOut || vd.reason != tt.wantReason {
				t.Fatalf("verdict %d %q %q (%v), want %d %q %q", vd.action, vd.outcome, vd.reason, vd.cause,
					tt.wantAction, tt.wantOut, tt.wantReason)
			}
			if got := e.Sim.CallCount(simulator.EndpointJob) - calls; got != tt.wantCalls {
				t.Fatalf("%d GET /job calls, want %d", got, tt.wantCalls)
			}
			if vd.outcome == outcomePublished && !vd.published {
				t.Fatal("a published result is not marked for the latency metric")
			}
			if tt.fault != nil {
				var ue *upstream.Error
				if !errors.As(vd.cause, &ue) && tt.wantAction == actRetry {
					t.Fatalf("retry cause %v is not the upstream's error", vd.cause)
				}
			}
		})
	}
}

// countingKV counts the synchronous requests made to JOBS.
type countingKV struct {
	jetstream.KeyValue
	n int
}

func (c *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	c.n++
	return c.KeyValue.Get(ctx, key)
}

func (c *countingKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	c.n++
	return c.KeyValue.Update(ctx, key, value, rev)
}

func (c *countingKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	c.n++
	return c.KeyValue.Create(ctx, key, value, opts...)
}

func (c *countingKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	c.n++
	return c.KeyValue.Put(ctx, key, value)
}

// TestHappyPathRoundTrips pins issue 12's read once, write once: verifying the webhook of a known job
// that finished costs one JOBS read, one result publish (with its fence: a claim before it, and a done
// message after it that is not waited for) and one JOBS write that records the delivery with the
// attempt; the ack is a plain one. Four synchronous JetStream request/replies (claim, result, read,
// write), within the four the issue allows (eight before).
func TestHappyPathRoundTrips(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 5, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	kv := &countingKV{KeyValue: e.Deliverer.Store().KV()}
	store := jobs.NewStore(kv)
	d, err := jobs.NewDeliverer(jobs.DelivererConfig{JS: e.JS, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(Config{JS: e.JS, API: e.API, Deliverer: d, Log: e.Log, UnknownRPM: UnknownOff})
	if err != nil {
		t.Fatal(err)
	}
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "round trips"})
	now := time.Now().UTC()
	if _, err := store.Create(natstest.CtxWithin(t, 5*time.Second), jobs.Record{JobID: id, Modality: "prompt",
		State: jobs.StatePending, Origin: jobs.OriginSubmit, SubmittedAt: now, Deadline: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	msg := e.fetchWebhook(t, testworld.WebhookBody(id, false))
	results := len(e.StreamMsgs(contract.Default.StreamResults, ""))
	kv.n = 0
	v.process(context.Background(), msg, v.lanes()[0])
	publishes := len(e.StreamMsgs(contract.Default.StreamResults, "")) - results
	if kv.n != 2 || publishes != 1 {
		t.Fatalf("%d JOBS requests and %d publishes, want 2 (read, write) and 1", kv.n, publishes)
	}
	rec := e.Record(id)
	if rec.State != jobs.StateDelivered || rec.Attempts != 1 || rec.WebhookReceivedAt == nil {
		t.Fatalf("record %+v: the attempt was not written with the delivery", rec)
	}
}

// TestUpperCaseIDIsTheSameJob pins issue 12 finding 5: webhooks of one job with its id in upper and in
// lower case are one job: one record, keyed in lower case, and one result.
func TestUpperCaseIDIsTheSameJob(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 9, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	stop := e.startVerifier()
	defer stop()
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "case"})
	upper := strings.ToUpper(id)
	e.PublishWebhook("prompt", upper, testworld.WebhookBody(upper, false))
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	outcome := func(o string) float64 {
		return testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_verify_outcomes_total", Label: "outcome", Value: o})
	}
	// Both webhooks settle: one publishes, the other finds the result out, with no retry in between.
	natstest.WaitFor(t, 10*time.Second, func() error {
		if got := outcome("published") + outcome("already_delivered") + outcome("retry"); got < 2 {
			return fmt.Errorf("%v of 2 webhooks settled", got)
		}
		return nil
	})
	if outcome("published") != 1 || outcome("already_delivered") != 1 || outcome("retry") != 0 {
		t.Fatalf("outcomes published %v, already_delivered %v, retry %v; want 1, 1, 0",
			outcome("published"), outcome("already_delivered"), outcome("retry"))
	}
	if n := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))[id]; n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	if _, _, err := e.Deliverer.Store().Get(natstest.CtxWithin(t, 5*time.Second), upper); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("a record under the upper-case id: %v", err)
	}
	if rec := e.Record(id); rec.State != jobs.StateDelivered {
		t.Fatalf("record %s, want delivered", rec.State)
	}
}

// TestOutcomeLabels pins the labels of bridge_verify_outcomes_total: settling decides
// from the typed outcome, and the label is only its name.
func TestOutcomeLabels(t *testing.T) {
	want := map[outcome]string{outcomePublished: "published", outcomeAlreadyDelivered: "already_delivered", outcomeLate: "late",
		outcomeNotFound: "not_found", outcomeNotTerminal: "not_terminal", outcomeRetry: "retry", outcomeExhausted: "exhausted",
		outcomeRejected: "rejected", outcomeMalformed: "malformed", outcomeShutdown: "shutdown", outcomeUnknownLaned: "unknown_laned",
		outcomeUnknownShed: "unknown_shed", outcomeUnknownWaiting: "unknown_waiting", outcomeAuthPaused: "auth_paused", outcomeAbsent: "absent"}
	if len(want) != len(outcomeLabels)-1 {
		t.Fatalf("%d outcomes, %d labels", len(want), len(outcomeLabels)-1)
	}
	for o, label := range want {
		if o.String() != label {
			t.Errorf("outcome %d: label %q, want %q", o, o.String(), label)
		}
	}
}
