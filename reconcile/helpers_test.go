package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
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

// env is one test's world (see [testworld.World]) with reconcilers to start; ctx bounds the test.
type env struct {
	*testworld.World
	t   *testing.T
	ctx context.Context
}

func newEnv(t *testing.T, sc simulator.Config) *env {
	t.Helper()
	return newEnvOn(t, testworld.Single, sc)
}

// newEnvOn is newEnv on a topology: Single (one node, R1) or Cluster (three nodes, R3).
func newEnvOn(t *testing.T, topo testworld.Topology, sc simulator.Config) *env {
	t.Helper()
	if sc.Seed == 0 {
		sc.Seed = 1
	}
	w := testworld.New(t, testworld.WithTopology(topo), testworld.WithProvision(natsx.ProvisionConfig{LeaseTTL: testTTL}),
		testworld.WithSimulator(sc))
	return &env{World: w, t: t, ctx: natstest.CtxWithin(t, 2*time.Minute)}
}

// submit submits a prompt job to the simulator and records it pending in JOBS with the given deadline.
func (e *env) submit(text string, deadline time.Duration) string {
	e.t.Helper()
	sub, err := e.API.Submit(e.ctx, "prompt", map[string]string{"prompt": text}, "")
	if err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	e.record(sub.JobID, time.Now(), deadline)
	return sub.JobID
}

func (e *env) record(id string, submitted time.Time, deadline time.Duration) {
	e.t.Helper()
	_, err := e.Store.Create(e.ctx, jobs.Record{JobID: id, Modality: "prompt", State: jobs.StatePending,
		Origin: jobs.OriginSubmit, SubmittedAt: submitted.UTC(), Deadline: submitted.Add(deadline).UTC()})
	if err != nil {
		e.t.Fatalf("create record: %v", err)
	}
}

// waitTerminal waits until the simulator reports the job terminal.
func (e *env) waitTerminal(id string) {
	e.t.Helper()
	natstest.WaitFor(e.t, 10*time.Second, func() error {
		j, err := e.API.GetJob(e.ctx, id, upstream.ClassVerify)
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
	for _, m := range natstest.StreamMsgs(e.t, e.JS, contract.Default.StreamResults) {
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
	r   *Reconciler
	nc  *nats.Conn
	reg *prometheus.Registry
	// stop stops the reconciler and its watcher and waits for them; safe to call twice.
	stop func()
}

func (e *env) start(name string, mod func(*Config)) *replica {
	e.t.Helper()
	nc, js := e.Connect()
	jkv, err := js.KeyValue(e.ctx, contract.Default.BucketJobs)
	if err != nil {
		e.t.Fatalf("jobs bucket: %v", err)
	}
	leases, err := js.KeyValue(e.ctx, contract.Default.BucketLeases)
	if err != nil {
		e.t.Fatalf("leases bucket: %v", err)
	}
	d, err := jobs.NewDeliverer(jobs.DelivererConfig{JS: js, Store: jobs.NewStore(jkv), Log: e.Log})
	if err != nil {
		e.t.Fatalf("deliverer: %v", err)
	}
	reg := prometheus.NewRegistry()
	// The replica's own JOBS watcher, probed every poll interval as the bridge's is.
	w := jobs.NewWatcher(jkv, testPoll, e.Log)
	cfg := Config{Watcher: w, Leases: leases, Deliverer: d, API: e.API, Budget: budget.Unlimited{}, PollInterval: testPoll, WebhookGrace: testGrace,
		Instance: name, Log: e.Log, Metrics: reg}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		e.t.Fatalf("new reconciler: %v", err)
	}
	stopWatcher := testworld.Run(e.t, "watcher", w.Run)
	stopRun := testworld.Run(e.t, "reconciler "+name, r.Run)
	return &replica{r: r, nc: nc, reg: reg, stop: func() { stopRun(); stopWatcher() }}
}

func (rp *replica) leader() bool { return testutil.ToFloat64(rp.r.m.leader) == 1 }

func (rp *replica) sweeps() float64 { return testutil.ToFloat64(rp.r.m.sweeps.WithLabelValues("ok")) }

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
