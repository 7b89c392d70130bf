package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	bjs "github.com/evershield/bridge/jetstream"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

const testToken = "hook-token-123"

// topology is where a test's JetStream runs.
type topology struct {
	name     string
	replicas int
}

var topologies = []topology{{"single", 1}, {"cluster", 3}}

// env is one test's world: JetStream with the bridge's streams, the simulator, a client of it, and a
// webhook receiver that stores webhooks in WEBHOOKS exactly as ingest does.
type env struct {
	tb        testing.TB
	node      *natstest.Node // single topology only
	nc        *nats.Conn
	js        jetstream.JetStream
	store     *jobs.Store
	res       bjs.Resources
	deliverer *jobs.Deliverer
	sim       *simulator.Simulator
	api       upstream.API
	hookURL   string
	reg       *prometheus.Registry
	log       zerolog.Logger
}

func newEnv(tb testing.TB, topo topology, simCfg simulator.Config) *env {
	tb.Helper()
	e := &env{tb: tb, reg: prometheus.NewRegistry(), log: zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.InfoLevel)}
	var urls string
	if topo.replicas > 1 {
		urls = natstest.RunCluster(tb, topo.replicas).URLs()
	} else {
		e.node = natstest.RunServer(tb)
		urls = e.node.ClientURL()
	}
	e.nc, e.js = natstest.Connect(tb, urls)
	ctx := testCtx(tb, 30*time.Second)
	var err error
	e.res, err = bjs.Provision(ctx, e.js, bjs.ProvisionConfig{Replicas: topo.replicas})
	if err != nil {
		tb.Fatalf("provision: %v", err)
	}
	e.store = jobs.NewStore(e.res.Jobs)
	e.deliverer, err = jobs.NewDeliverer(jobs.DelivererConfig{JS: e.js, Store: e.store, Log: e.log})
	if err != nil {
		tb.Fatalf("deliverer: %v", err)
	}
	e.sim = simtest.Run(tb, simCfg)
	e.api = simtest.Client(tb, e.sim, func(c *upstream.Config) { c.Log = e.log })
	e.hookURL = e.startHookReceiver()
	return e
}

func testCtx(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// startHookReceiver serves POST /webhook/{modality}?token= like ingest: it publishes the body to
// webhooks.<modality> with Nats-Msg-Id = job_id and the received-at and remote-address headers, and
// answers 200 only after JetStream acknowledged.
func (e *env) startHookReceiver() string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != testToken {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, err := parseJobID(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		modality := strings.TrimPrefix(r.URL.Path, "/webhook/")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := e.js.PublishMsg(ctx, webhookMsg(modality, id, body, time.Now(), r.RemoteAddr)); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	e.tb.Cleanup(srv.Close)
	return srv.URL
}

// webhookMsg is the raw webhook message ingest publishes.
func webhookMsg(modality, msgID string, body []byte, receivedAt time.Time, remote string) *nats.Msg {
	m := nats.NewMsg(bjs.WebhookSubject(modality))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	m.Header.Set(jetstream.ExpectedStreamHeader, bjs.StreamWebhooks)
	m.Header.Set(bjs.HeaderReceivedAt, receivedAt.UTC().Format(time.RFC3339Nano))
	m.Header.Set(bjs.HeaderRemoteAddr, remote)
	if modality != "" {
		m.Header.Set(bjs.HeaderModality, modality)
	}
	return m
}

// publishWebhook stores a raw webhook as ingest would (bjs.PublishMsg, as ingest does, takes a clustered
// stream's "duplicate message id is in process" as the duplicate it is), with msgID as Nats-Msg-Id.
func (e *env) publishWebhook(modality, msgID string, body []byte) {
	e.tb.Helper()
	ctx := testCtx(e.tb, 10*time.Second)
	if _, err := bjs.PublishMsg(ctx, e.js, webhookMsg(modality, msgID, body, time.Now(), "203.0.113.7:4711")); err != nil {
		e.tb.Fatalf("publish webhook %s: %v", msgID, err)
	}
}

// startVerifier runs a verifier until the returned stop is called (or the test ends); stop waits for
// Run to return and fails the test on an error.
func (e *env) startVerifier(mods ...func(*VerifierConfig)) (stop func()) {
	e.tb.Helper()
	cfg := VerifierConfig{
		JS: e.js, API: e.api, Deliverer: e.deliverer, Log: e.log, Metrics: e.reg,
		Concurrency: 16, RetryBase: 20 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
		// Tests that are not about the unknown-job budget must not wait for it.
		UnknownRPM: 60000, UnknownBurst: 1000,
	}
	for _, m := range mods {
		m(&cfg)
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		e.tb.Fatalf("new verifier: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.tb.Errorf("verifier run: %v", err)
				}
			case <-time.After(30 * time.Second):
				e.tb.Errorf("verifier did not stop within 30s")
			}
		})
	}
	e.tb.Cleanup(stop)
	return stop
}

// startSubmitter starts a submit service whose webhooks come to the hook receiver.
func (e *env) startSubmitter(mods ...func(*SubmitConfig)) *Submitter {
	e.tb.Helper()
	cfg := SubmitConfig{
		NC: e.nc, JS: e.js, Idempotency: e.res.Idempotency, API: e.api, Store: e.store, Log: e.log, Metrics: e.reg,
		PublicURL: e.hookURL, Token: testToken, IdempotencyWait: 10 * time.Second,
	}
	for _, m := range mods {
		m(&cfg)
	}
	s, err := NewSubmitter(cfg)
	if err != nil {
		e.tb.Fatalf("new submitter: %v", err)
	}
	if err := s.Start(testCtx(e.tb, 30*time.Second)); err != nil {
		e.tb.Fatalf("start submitter: %v", err)
	}
	e.tb.Cleanup(func() { _ = s.Stop() })
	return s
}

// request sends a request to the micro service and returns the reply, failing on transport errors.
func (e *env) request(subject string, body []byte, hdr map[string]string) *nats.Msg {
	e.tb.Helper()
	m := nats.NewMsg(subject)
	m.Data = body
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	reply, err := e.nc.RequestMsg(m, 20*time.Second)
	if err != nil {
		e.tb.Fatalf("request %s: %v", subject, err)
	}
	return reply
}

// submit submits through the bridge and returns the reply, failing on a micro error.
func (e *env) submit(modality string, fields map[string]string) SubmitReply {
	e.tb.Helper()
	b, _ := json.Marshal(fields)
	reply := e.request(bjs.SubjectSubmit+modality, b, nil)
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		e.tb.Fatalf("submit %s: error %s %s", modality, code, reply.Header.Get(micro.ErrorHeader))
	}
	var r SubmitReply
	if err := json.Unmarshal(reply.Data, &r); err != nil || r.JobID == "" {
		e.tb.Fatalf("submit reply %q: %v", reply.Data, err)
	}
	return r
}

// submitDirect creates an upstream job without the bridge and without a webhook, as a job submitted
// elsewhere, and waits until the simulator finished it.
func (e *env) submitDirect(modality string, fields map[string]string) string {
	e.tb.Helper()
	sub, err := e.api.Submit(testCtx(e.tb, 10*time.Second), modality, fields, "")
	if err != nil {
		e.tb.Fatalf("submit direct: %v", err)
	}
	e.waitSimStatus(sub.JobID, upstream.StatusCompleted)
	return sub.JobID
}

func (e *env) waitSimStatus(id, status string) {
	e.tb.Helper()
	natstest.WaitFor(e.tb, 10*time.Second, func() error {
		j, ok := e.sim.Job(id)
		if !ok || j.Status != status {
			return fmt.Errorf("job %s is %q, want %s", id, j.Status, status)
		}
		return nil
	})
}

// webhookBody is the upstream's webhook body for a finished job (no type, no created_at).
func webhookBody(id string, prohibited bool) []byte {
	b, _ := json.Marshal(map[string]any{
		"job_id": id, "status": "completed", "is_prohibited": prohibited, "categories": map[string]any{"custom": map[string]any{}},
		"completed_at": time.Now().UTC().Format(time.RFC3339),
	})
	return b
}

// streamMsgs returns every message of stream whose subject matches filter ("" = all).
func (e *env) streamMsgs(stream, filter string) []*jetstream.RawStreamMsg {
	e.tb.Helper()
	var out []*jetstream.RawStreamMsg
	for _, m := range natstest.StreamMsgs(e.tb, e.js, stream) {
		if filter == "" || subjectMatches(filter, m.Subject) {
			out = append(out, m)
		}
	}
	return out
}

func subjectMatches(filter, subject string) bool {
	if prefix, ok := strings.CutSuffix(filter, ">"); ok {
		return strings.HasPrefix(subject, prefix)
	}
	return filter == subject
}

// waitSettled waits until the verify consumer has nothing pending or unacknowledged.
func (e *env) waitSettled(d time.Duration) {
	e.tb.Helper()
	natstest.WaitFor(e.tb, d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := e.js.Consumer(ctx, bjs.StreamWebhooks, bjs.ConsumerVerify)
		if err != nil {
			return err
		}
		st, err := e.js.Stream(ctx, bjs.StreamWebhooks)
		if err != nil {
			return err
		}
		sinfo, err := st.Info(ctx)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		// The ack floor, not NumPending, is the proof: a consumer leader whose stream replica lags
		// reports nothing pending for messages it has not seen yet.
		if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream < sinfo.State.LastSeq {
			return fmt.Errorf("verify consumer: %d pending, %d unacknowledged, ack floor %d of %d",
				info.NumPending, info.NumAckPending, info.AckFloor.Stream, sinfo.State.LastSeq)
		}
		return nil
	})
}

// waitLaneSettled waits until the verifier's slow lane has handled every unknown_job message in
// DEADLETTER: nothing pending or unacknowledged, and its ack floor at the subject's last message.
func (e *env) waitLaneSettled(d time.Duration) {
	e.tb.Helper()
	natstest.WaitFor(e.tb, d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := e.js.Consumer(ctx, bjs.StreamDeadLetter, bjs.ConsumerVerifyUnknown)
		if err != nil {
			return err
		}
		st, err := e.js.Stream(ctx, bjs.StreamDeadLetter)
		if err != nil {
			return err
		}
		var last uint64
		m, err := st.GetLastMsgForSubject(ctx, bjs.DeadLetterSubject(ReasonUnknownJob))
		switch {
		case err == nil:
			last = m.Sequence
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream < last {
			return fmt.Errorf("slow lane: %d pending, %d unacknowledged, ack floor %d of %d",
				info.NumPending, info.NumAckPending, info.AckFloor.Stream, last)
		}
		return nil
	})
}

// waitResults waits until RESULTS holds n messages matching filter and returns them.
func (e *env) waitResults(filter string, n int, d time.Duration) []*jetstream.RawStreamMsg {
	e.tb.Helper()
	var msgs []*jetstream.RawStreamMsg
	natstest.WaitFor(e.tb, d, func() error {
		msgs = e.streamMsgs(bjs.StreamResults, filter)
		if len(msgs) < n {
			return fmt.Errorf("%d results on %s, want %d", len(msgs), filter, n)
		}
		return nil
	})
	return msgs
}

// record reads a JOBS record, failing the test if it is missing.
func (e *env) record(id string) jobs.Record {
	e.tb.Helper()
	rec, _, err := e.store.Get(testCtx(e.tb, 5*time.Second), id)
	if err != nil {
		e.tb.Fatalf("record %s: %v", id, err)
	}
	return rec
}

func (e *env) waitState(id string, st jobs.State, d time.Duration) jobs.Record {
	e.tb.Helper()
	var rec jobs.Record
	natstest.WaitFor(e.tb, d, func() error {
		r, _, err := e.store.Get(context.Background(), id)
		if err != nil {
			return err
		}
		if r.State != st {
			return fmt.Errorf("job %s is %s, want %s", id, r.State, st)
		}
		rec = r
		return nil
	})
	return rec
}

// resultIDs counts results per job_id.
func resultIDs(tb testing.TB, msgs []*jetstream.RawStreamMsg) map[string]int {
	tb.Helper()
	ids := map[string]int{}
	for _, m := range msgs {
		var v struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal(m.Data, &v); err != nil {
			tb.Fatalf("result seq %d: %v", m.Sequence, err)
		}
		ids[v.JobID]++
	}
	return ids
}

// counterValue reads one series of a counter vector from the registry.
func counterValue(tb testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
