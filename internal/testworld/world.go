// Package testworld is the one test world of the bridge: JetStream on a single node or a cluster with
// the bridge's streams and buckets, the JOBS store and a deliverer, and what a test chooses besides (see
// [Option]): the upstream simulator and a client of it, budgets, and a webhook receiver that stores
// webhooks in WEBHOOKS exactly as ingest does. It imports no role, so every role's tests can use it.
package testworld

import (
	"cmp"
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

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// Token is the webhook token of the hook receiver.
const Token = "hook-token-123"

// Topology is where a test's JetStream runs.
type Topology struct {
	Name     string
	Replicas int
}

// Single and Cluster are the two topologies every end-to-end guarantee is run against.
var (
	Single  = Topology{"single", 1}
	Cluster = Topology{"cluster", 3}
)

// Topologies are Single and Cluster.
func Topologies() []Topology { return []Topology{Single, Cluster} }

// World is one test's world: JetStream with the bridge's streams and buckets, the JOBS store and a
// deliverer, and the parts its options started.
type World struct {
	TB    testing.TB
	Nodes natstest.Cluster // every node; one on Single
	Node  *natstest.Node   // Single only
	URLs  string           // every node's client URL, comma-joined
	NC    *nats.Conn
	JS    jetstream.JetStream
	// Res, Store, History and Deliverer (which reads History) are zero [WithoutProvision].
	Res       natsx.Resources
	Store     *jobs.Store
	History   *history.Store
	Deliverer *jobs.Deliverer
	// Sim and API, a client of it without a budget, are nil without [WithSimulator] or [World.StartSimulator].
	Sim *simulator.Simulator
	API *upstream.Client
	// HookURL is the base URL of the webhook receiver ([WithHookReceiver]): webhooks go to
	// HookURL/webhook/<modality>?token=Token.
	HookURL string
	Reg     *prometheus.Registry
	Log     zerolog.Logger
	pc      natsx.ProvisionConfig
}

// New starts the world opts choose, by default a single node with the bridge's streams and buckets, the
// store and a deliverer; everything stops when the test ends.
func New(tb testing.TB, opts ...Option) *World {
	tb.Helper()
	c := config{topo: Single, provision: &natsx.ProvisionConfig{}}
	for _, o := range opts {
		if err := o(&c); err != nil {
			tb.Fatalf("testworld: %v", err)
		}
	}
	e := &World{TB: tb, Reg: prometheus.NewRegistry(),
		Log: zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.InfoLevel).With().Timestamp().Logger()}
	var nodeOpts []natstest.Option
	var auth []nats.Option
	if len(c.users) > 0 {
		nodeOpts = append(nodeOpts, natstest.WithUsers(c.users...))
		auth = append(auth, nats.UserInfo(c.users[0].Username, c.users[0].Password))
	}
	if c.topo.Replicas > 1 {
		e.Nodes = natstest.RunCluster(tb, c.topo.Replicas, nodeOpts...)
	} else {
		e.Node = natstest.RunServer(tb, nodeOpts...)
		e.Nodes = natstest.Cluster{e.Node}
	}
	e.URLs = e.Nodes.URLs()
	e.NC, e.JS = natstest.Connect(tb, e.URLs, auth...)
	if c.provision != nil {
		e.pc = *c.provision
		e.pc.Replicas = cmp.Or(e.pc.Replicas, c.topo.Replicas)
		if c.earlier {
			e.createEarlierJobs()
		}
		e.Provision()
		e.Store = jobs.NewStore(e.Res.Jobs)
		var err error
		if e.History, err = history.New(history.Config{KV: e.Res.History}); err != nil {
			tb.Fatalf("testworld: history: %v", err)
		}
		if e.Deliverer, err = jobs.NewDeliverer(jobs.DelivererConfig{JS: e.JS, Store: e.Store, Log: e.Log, History: e.History}); err != nil {
			tb.Fatalf("testworld: deliverer: %v", err)
		}
	}
	if c.sim != nil {
		e.StartSimulator(*c.sim, c.simOpts...)
	}
	if c.hooks {
		e.HookURL = e.StartHookReceiver()
	}
	return e
}

// EarlierJobs is JOBS as the releases before the history made it, and updated it at each of their starts.
func EarlierJobs(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: contract.Default.BucketJobs, Description: "jobs the bridge tracks, keyed by job_id",
		History: 1, Storage: jetstream.FileStorage, Replicas: replicas}
}

func (e *World) createEarlierJobs() {
	e.TB.Helper()
	if _, err := e.JS.CreateKeyValue(natstest.CtxWithin(e.TB, 30*time.Second), EarlierJobs(e.pc.Replicas)); err != nil {
		e.TB.Fatalf("testworld: JOBS of the earlier layout: %v", err)
	}
}

// Provision provisions the bridge's streams and buckets as New did, and again after a test deleted one.
func (e *World) Provision() {
	e.TB.Helper()
	res, err := natsx.Provision(natstest.CtxWithin(e.TB, 30*time.Second), e.JS, e.pc)
	if err != nil {
		e.TB.Fatalf("testworld: provision: %v", err)
	}
	e.Res = res
}

// Connect opens another connection to the world's servers, as another process of the bridge would.
func (e *World) Connect(opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	e.TB.Helper()
	return natstest.Connect(e.TB, e.URLs, opts...)
}

// StartSimulator starts the upstream simulator for cfg, adjusted by opts, and a client of it ([World.API]).
func (e *World) StartSimulator(cfg simulator.Config, opts ...simtest.Option) {
	e.TB.Helper()
	e.Sim = simtest.Run(e.TB, cfg, opts...)
	e.API = e.Client()
}

// Client is a new client of the simulator that logs to the world's log; mods adjust its config (e.g.
// its Limiter or Contract).
func (e *World) Client(mods ...func(*upstream.Config)) *upstream.Client {
	e.TB.Helper()
	return simtest.Client(e.TB, e.Sim, append([]func(*upstream.Config){func(c *upstream.Config) { c.Log = e.Log }}, mods...)...)
}

// StartHookReceiver serves POST /webhook/{modality}?token= like ingest: it publishes the body to
// webhooks.<modality> with Nats-Msg-Id = job_id and the received-at and remote-address headers, and
// answers 200 only after JetStream acknowledged.
func (e *World) StartHookReceiver() string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != Token {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var v struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal(body, &v); err != nil || !jobs.ValidID(v.JobID) {
			http.Error(w, "no valid job_id", http.StatusBadRequest)
			return
		}
		id := v.JobID
		modality := strings.TrimPrefix(r.URL.Path, "/webhook/")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := e.JS.PublishMsg(ctx, WebhookMsg(modality, id, body, r.RemoteAddr)); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	e.TB.Cleanup(srv.Close)
	return srv.URL
}

// WebhookMsg is the raw webhook message ingest publishes, received now from remote.
func WebhookMsg(modality, msgID string, body []byte, remote string) *nats.Msg {
	m := nats.NewMsg(contract.Default.WebhookSubject(modality))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	m.Header.Set(jetstream.ExpectedStreamHeader, contract.Default.StreamWebhooks)
	m.Header.Set(contract.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano))
	m.Header.Set(contract.HeaderRemoteAddr, remote)
	if modality != "" {
		m.Header.Set(contract.HeaderModality, modality)
	}
	return m
}

// PublishWebhook stores a raw webhook as ingest would (natsx.PublishMsg, as ingest does, takes a clustered
// stream's "duplicate message id is in process" as the duplicate it is), with msgID as Nats-Msg-Id.
func (e *World) PublishWebhook(modality, msgID string, body []byte) {
	e.TB.Helper()
	ctx := natstest.CtxWithin(e.TB, 10*time.Second)
	if _, err := natsx.PublishMsg(ctx, e.JS, WebhookMsg(modality, msgID, body, "203.0.113.7:4711")); err != nil {
		e.TB.Fatalf("publish webhook %s: %v", msgID, err)
	}
}

// Request sends a request to the micro service and returns the reply, failing on transport errors.
func (e *World) Request(subject string, body []byte, hdr map[string]string) *nats.Msg {
	e.TB.Helper()
	m := nats.NewMsg(subject)
	m.Data = body
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	reply, err := e.NC.RequestMsg(m, 20*time.Second)
	if err != nil {
		e.TB.Fatalf("request %s: %v", subject, err)
	}
	return reply
}

// SubmitReply is the submit service's reply.
type SubmitReply struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"`
}

// Submit submits through the submit service and returns the reply, failing on a micro error.
func (e *World) Submit(modality string, fields map[string]string) SubmitReply {
	e.TB.Helper()
	b, _ := json.Marshal(fields)
	reply := e.Request(contract.Default.SubjectSubmit+modality, b, nil)
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		e.TB.Fatalf("submit %s: error %s %s", modality, code, reply.Header.Get(micro.ErrorHeader))
	}
	var r SubmitReply
	if err := json.Unmarshal(reply.Data, &r); err != nil || r.JobID == "" {
		e.TB.Fatalf("submit reply %q: %v", reply.Data, err)
	}
	return r
}

// SubmitDirect creates an upstream job without the bridge and without a webhook, as a job submitted
// elsewhere, and waits until the simulator finished it.
func (e *World) SubmitDirect(modality string, fields map[string]string) string {
	e.TB.Helper()
	sub, err := e.API.Submit(natstest.CtxWithin(e.TB, 10*time.Second), modality, fields, "")
	if err != nil {
		e.TB.Fatalf("submit direct: %v", err)
	}
	e.WaitSimStatus(sub.JobID, upstream.StatusCompleted)
	return sub.JobID
}

// WaitSimStatus waits until the simulator reports job id in status.
func (e *World) WaitSimStatus(id, status string) {
	e.TB.Helper()
	natstest.WaitFor(e.TB, 10*time.Second, func() error {
		j, ok := e.Sim.Job(id)
		if !ok || j.Status != status {
			return fmt.Errorf("job %s is %q, want %s", id, j.Status, status)
		}
		return nil
	})
}

// WebhookBody is the upstream's webhook body for a finished job (no type, no created_at).
func WebhookBody(id string, prohibited bool) []byte {
	b, _ := json.Marshal(map[string]any{
		"job_id": id, "status": "completed", "is_prohibited": prohibited, "categories": map[string]any{"custom": map[string]any{}},
		"completed_at": time.Now().UTC().Format(time.RFC3339),
	})
	return b
}

// StreamMsgs returns every message of stream whose subject matches filter ("" = all).
func (e *World) StreamMsgs(stream, filter string) []*jetstream.RawStreamMsg {
	e.TB.Helper()
	var out []*jetstream.RawStreamMsg
	for _, m := range natstest.StreamMsgs(e.TB, e.JS, stream) {
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

// WaitSettled waits until the verify consumer has nothing pending or unacknowledged.
func (e *World) WaitSettled(d time.Duration) {
	e.TB.Helper()
	natstest.WaitFor(e.TB, d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := e.JS.Consumer(ctx, contract.Default.StreamWebhooks, contract.Default.ConsumerVerify)
		if err != nil {
			return err
		}
		st, err := e.JS.Stream(ctx, contract.Default.StreamWebhooks)
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

// WaitLaneSettled waits until the verifier's slow lane has handled every message on laneSubject in
// SLOWLANE: nothing pending or unacknowledged, and its ack floor at the subject's last message.
func (e *World) WaitLaneSettled(laneSubject string, d time.Duration) {
	e.TB.Helper()
	natstest.WaitFor(e.TB, d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := e.JS.Consumer(ctx, contract.Default.StreamSlowLane, contract.Default.ConsumerVerifyUnknown)
		if err != nil {
			return err
		}
		st, err := e.JS.Stream(ctx, contract.Default.StreamSlowLane)
		if err != nil {
			return err
		}
		var last uint64
		m, err := st.GetLastMsgForSubject(ctx, laneSubject)
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

// WaitResults waits until RESULTS holds n messages matching filter and returns them.
func (e *World) WaitResults(filter string, n int, d time.Duration) []*jetstream.RawStreamMsg {
	e.TB.Helper()
	var msgs []*jetstream.RawStreamMsg
	natstest.WaitFor(e.TB, d, func() error {
		msgs = e.StreamMsgs(contract.Default.StreamResults, filter)
		if len(msgs) < n {
			return fmt.Errorf("%d results on %s, want %d", len(msgs), filter, n)
		}
		return nil
	})
	return msgs
}

// Record reads a JOBS record, failing the test if it is missing.
func (e *World) Record(id string) jobs.Record {
	e.TB.Helper()
	rec, _, err := e.Store.Get(natstest.CtxWithin(e.TB, 5*time.Second), id)
	if err != nil {
		e.TB.Fatalf("record %s: %v", id, err)
	}
	return rec
}

// WaitState waits until job id is in state st in JOBS and returns its record.
func (e *World) WaitState(id string, st jobs.State, d time.Duration) jobs.Record {
	e.TB.Helper()
	var rec jobs.Record
	natstest.WaitFor(e.TB, d, func() error {
		r, _, err := e.Store.Get(context.Background(), id)
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

// ResultIDs counts results per job_id.
func ResultIDs(tb testing.TB, msgs []*jetstream.RawStreamMsg) map[string]int {
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

// Series names one series of a metric vector by one of its labels.
type Series struct{ Name, Label, Value string }

// CounterValue reads one series of a counter vector from the registry, 0 when there is none: for a test
// that sees only the registry (the collectors are another package's). A test that holds the collector
// reads it with testutil.ToFloat64.
func CounterValue(tb testing.TB, reg prometheus.Gatherer, s Series) float64 {
	name, label, value := s.Name, s.Label, s.Value
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

// Run runs a role's run func until the returned stop is called (or the test ends); stop waits for run
// to return and fails the test on an error. name is the role, for the failure message.
func Run(tb testing.TB, name string, run func(context.Context) error) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("%s run: %v", name, err)
				}
			case <-time.After(30 * time.Second):
				tb.Errorf("%s did not stop within 30s", name)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}
