package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

const (
	testPoll  = 200 * time.Millisecond
	testGrace = 100 * time.Millisecond
	testTTL   = time.Second
)

// env is one embedded NATS node with the bridge's streams and buckets, and one simulator.
type env struct {
	t     *testing.T
	ctx   context.Context
	node  *natstest.Node // the node of a "single" topology
	url   string
	js    jetstream.JetStream
	res   natsx.Resources
	store *jobs.Store
	deliv *jobs.Deliverer
	sim   *simulator.Simulator
	api   *upstream.Client
}

func newEnv(t *testing.T, sc simulator.Config) *env {
	t.Helper()
	return newEnvOn(t, "single", sc)
}

// newEnvOn is newEnv on a topology: "single" (one node, R1) or "cluster" (three nodes, R3).
func newEnvOn(t *testing.T, topology string, sc simulator.Config) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	url, replicas := "", 1
	var node *natstest.Node
	switch topology {
	case "single":
		node = natstest.RunServer(t)
		url = node.ClientURL()
	case "cluster":
		url, replicas = natstest.RunCluster(t, 3).URLs(), 3
	default:
		t.Fatalf("topology %q", topology)
	}
	_, js := natstest.Connect(t, url)
	res, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{LeaseTTL: testTTL, Replicas: replicas})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	store := jobs.NewStore(res.Jobs)
	d, err := jobs.NewDeliverer(jobs.DelivererConfig{JS: js, Store: store, Log: testLog(t)})
	if err != nil {
		t.Fatalf("deliverer: %v", err)
	}
	if sc.Seed == 0 {
		sc.Seed = 1
	}
	sim := simtest.Run(t, sc)
	return &env{t: t, ctx: ctx, node: node, url: url, js: js, res: res, store: store, deliv: d, sim: sim, api: simtest.Client(t, sim)}
}

func testLog(tb testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

// submit submits a prompt job to the simulator and records it pending in JOBS with the given deadline.
func (e *env) submit(text string, deadline time.Duration) string {
	e.t.Helper()
	sub, err := e.api.Submit(e.ctx, "prompt", map[string]string{"prompt": text}, "")
	if err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	e.record(sub.JobID, time.Now(), deadline)
	return sub.JobID
}

func (e *env) record(id string, submitted time.Time, deadline time.Duration) {
	e.t.Helper()
	_, err := e.store.Create(e.ctx, jobs.Record{JobID: id, Modality: "prompt", State: jobs.StatePending,
		Origin: jobs.OriginSubmit, SubmittedAt: submitted.UTC(), Deadline: submitted.Add(deadline).UTC()})
	if err != nil {
		e.t.Fatalf("create record: %v", err)
	}
}

func (e *env) rec(id string) jobs.Record {
	e.t.Helper()
	r, _, err := e.store.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("get record: %v", err)
	}
	return r
}

// waitTerminal waits until the simulator reports the job terminal.
func (e *env) waitTerminal(id string) {
	e.t.Helper()
	natstest.WaitFor(e.t, 10*time.Second, func() error {
		j, err := e.api.GetJob(e.ctx, id, upstream.ClassVerify)
		if err != nil {
			return err
		}
		if !j.Terminal() {
			return fmt.Errorf("job %s %s", id, j.Status)
		}
		return nil
	})
}

// result is one message of RESULTS.
type result struct {
	Seq       uint64
	Subject   string
	Source    string
	MsgID     string
	JobID     string
	Status    string
	ErrorCode string
	Bridge    jobs.Meta
	Stored    time.Time
}

func (e *env) results() []result {
	e.t.Helper()
	var out []result
	for _, m := range natstest.StreamMsgs(e.t, e.js, contract.StreamResults) {
		var body struct {
			JobID     string    `json:"job_id"`
			Status    string    `json:"status"`
			ErrorCode string    `json:"error_code"`
			Bridge    jobs.Meta `json:"bridge"`
		}
		if err := json.Unmarshal(m.Data, &body); err != nil {
			e.t.Fatalf("result %d: %v", m.Sequence, err)
		}
		out = append(out, result{Seq: m.Sequence, Subject: m.Subject, Source: m.Header.Get(contract.HeaderBridgeSource),
			MsgID: m.Header.Get(jetstream.MsgIDHeader), JobID: body.JobID, Status: body.Status,
			ErrorCode: body.ErrorCode, Bridge: body.Bridge, Stored: m.Time})
	}
	return out
}

// resultsOf returns the results of one job.
func (e *env) resultsOf(id string) []result {
	var out []result
	for _, r := range e.results() {
		if r.JobID == id {
			out = append(out, r)
		}
	}
	return out
}

// waitResults waits until every id has want results (counting results.late separately is up to the caller).
func (e *env) waitResults(timeout time.Duration, want int, ids ...string) {
	e.t.Helper()
	natstest.WaitFor(e.t, timeout, func() error {
		per := map[string]int{}
		for _, r := range e.results() {
			per[r.JobID]++
		}
		for _, id := range ids {
			if per[id] < want {
				return fmt.Errorf("job %s: %d results, want %d", id, per[id], want)
			}
		}
		return nil
	})
}

// replica is one running reconciler with its own NATS connection, as a separate process would have.
type replica struct {
	r      *Reconciler
	nc     *nats.Conn
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (e *env) start(name string, mod func(*Config)) *replica {
	e.t.Helper()
	nc, js := natstest.Connect(e.t, e.url)
	jkv, err := js.KeyValue(e.ctx, contract.BucketJobs)
	if err != nil {
		e.t.Fatalf("jobs bucket: %v", err)
	}
	leases, err := js.KeyValue(e.ctx, contract.BucketLeases)
	if err != nil {
		e.t.Fatalf("leases bucket: %v", err)
	}
	d, err := jobs.NewDeliverer(jobs.DelivererConfig{JS: js, Store: jobs.NewStore(jkv), Log: testLog(e.t)})
	if err != nil {
		e.t.Fatalf("deliverer: %v", err)
	}
	reg := prometheus.NewRegistry()
	// The replica's own JOBS watcher, probed every poll interval as the bridge's is.
	w := jobs.NewWatcher(jkv, testPoll, testLog(e.t))
	cfg := Config{Watcher: w, Leases: leases, Deliverer: d, API: e.api, Budget: budget.Unlimited{}, PollInterval: testPoll, WebhookGrace: testGrace,
		Instance: name, Log: testLog(e.t), Metrics: reg}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		e.t.Fatalf("new reconciler: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	rp := &replica{r: r, nc: nc, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go w.Run(ctx)
	go func() { rp.done <- r.Run(ctx) }()
	e.t.Cleanup(rp.stop)
	return rp
}

// stop cancels Run and waits for it; safe to call twice.
func (rp *replica) stop() {
	rp.once.Do(func() {
		rp.cancel()
		select {
		case err := <-rp.done:
			if err != nil {
				panic(fmt.Sprintf("run: %v", err))
			}
		case <-time.After(10 * time.Second):
			panic("reconciler did not stop within 10s")
		}
	})
}

func (rp *replica) leader() bool { return metricValue(rp.r.m.leader) == 1 }

func (rp *replica) sweeps() float64 { return metricValue(rp.r.m.sweeps.WithLabelValues("ok")) }

func waitLeader(t *testing.T, timeout time.Duration, rps ...*replica) *replica {
	t.Helper()
	var got *replica
	natstest.WaitFor(t, timeout, func() error {
		n := 0
		for _, rp := range rps {
			if rp.leader() {
				got = rp
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%d leaders", n)
		}
		return nil
	})
	return got
}

// metricValue reads a counter or gauge (testutil would need a module this one does not require).
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	panic("not a counter or gauge")
}

// waitState waits until the job's record is in state (JOBS is written after the result's publish).
func (e *env) waitState(id string, state jobs.State) jobs.Record {
	e.t.Helper()
	var rec jobs.Record
	natstest.WaitFor(e.t, 5*time.Second, func() error {
		if rec = e.rec(id); rec.State != state {
			return fmt.Errorf("job %s %s, want %s", id, rec.State, state)
		}
		return nil
	})
	return rec
}
