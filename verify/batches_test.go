package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evershield/bridge/batch"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// scarcity is a budget capacity the test sets: 0 makes every verification scarce (batches), a large value
// none.
type scarcity struct{ capacity atomic.Int64 }

func (s *scarcity) Capacity(time.Duration) float64 { return float64(s.capacity.Load()) }

func (s *scarcity) Queued() int { return 0 }

func (s *scarcity) RefusedWithin(time.Duration) bool { return false }

// fidelity runs the real check of the account's custom categories (GET /me/moderation-config) and waits
// for its first answer.
func (e *env) fidelity(ctx context.Context) *batch.Fidelity {
	e.TB.Helper()
	var checked atomic.Bool
	f := &batch.Fidelity{Log: e.Log, Check: func(ctx context.Context) (bool, error) {
		mc, err := e.API.ModerationConfig(ctx)
		checked.Store(err == nil)
		return len(mc.Custom()) > 0, err
	}}
	go f.Run(ctx)
	natstest.WaitFor(e.TB, 10*time.Second, func() error {
		if !checked.Load() {
			return errors.New("custom categories not checked yet")
		}
		return nil
	})
	return f
}

// batched configures the verifier for batches over the real export.
func (e *env) batched(s *scarcity, f *batch.Fidelity) func(*Config) {
	return func(c *Config) {
		c.Export, c.Budget, c.Fidelity = e.API, s, f
		c.BatchMaxWait = 200 * time.Millisecond
	}
}

// pendingRecord creates the JOBS record of a job the bridge submitted at submitted.
func (e *env) pendingRecord(id string, submitted time.Time) {
	e.TB.Helper()
	if _, err := e.Deliverer.Store().Create(natstest.CtxWithin(e.TB, 5*time.Second), jobs.Record{JobID: id, Modality: "prompt",
		State: jobs.StatePending, Origin: jobs.OriginSubmit, SubmittedAt: submitted.UTC(), Deadline: submitted.Add(time.Hour)}); err != nil {
		e.TB.Fatal(err)
	}
}

// sources reads each result's bridge.source by job id.
func sources(t *testing.T, e *env) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range e.StreamMsgs(contract.Default.StreamResults, "") {
		var r struct {
			JobID  string `json:"job_id"`
			Bridge struct {
				Source string `json:"source"`
			} `json:"bridge"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		out[r.JobID] = r.Bridge.Source
	}
	return out
}

// upstreamCalls is every call the simulator answered so far, health checks aside.
func upstreamCalls(e *env) int { return len(simtest.Calls(e.Sim)) }

// TestBatchSettlesRealAndForgedTogether: while calls are scarce, webhooks of the bridge's own jobs, of jobs
// submitted elsewhere and of forged ids are settled by export rounds: every real job gets its one result
// (source export, the same message GET /job would give), every forged id is dead-lettered as not_found
// without a GET of its own, and the whole lot costs a few calls: 20 forged ids cost at most 0.02 calls
// each beyond the rounds the real ones need.
func TestBatchSettlesRealAndForgedTogether(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 5, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	ctx := natstest.Ctx(t)
	own, foreign := map[string]bool{}, map[string]bool{}
	for i := range 12 {
		id := e.SubmitDirect("prompt", map[string]string{"prompt": "own " + strconv.Itoa(i)})
		e.pendingRecord(id, time.Now())
		own[id] = true
	}
	for i := range 6 {
		foreign[e.SubmitDirect("prompt", map[string]string{"prompt": "elsewhere " + strconv.Itoa(i)})] = true
	}
	forged := map[string]bool{}
	for range 20 {
		forged[uuid.NewString()] = true
	}
	s := &scarcity{}
	f := e.fidelity(ctx)
	before := upstreamCalls(e)
	for _, set := range []map[string]bool{own, foreign, forged} {
		for id := range set {
			e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
		}
	}
	e.startVerifier(e.batched(s, f), func(c *Config) {
		c.UnknownRPM, c.UnknownLimiter = 60, e.UnknownBudget(60, 1)
	})
	e.WaitResults(contract.Default.SubjectResults+">", len(own)+len(foreign), 30*time.Second)
	e.waitLaneSettled(30 * time.Second)
	e.WaitSettled(10 * time.Second)

	got := sources(t, e)
	for id, n := range testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, "")) {
		if n != 1 || !(own[id] || foreign[id]) {
			t.Errorf("job %s: %d results (own %v, foreign %v)", id, n, own[id], foreign[id])
		}
	}
	for id := range own {
		if got[id] != contract.SourceExport {
			t.Errorf("own job %s: source %q, want export", id, got[id])
		}
	}
	if len(got) != len(own)+len(foreign) {
		t.Errorf("%d results, want %d", len(got), len(own)+len(foreign))
	}
	dead := e.StreamMsgs(contract.Default.StreamDeadLetter, contract.Default.DeadLetterSubject(ReasonNotFound))
	if len(dead) != len(forged) {
		t.Errorf("%d not_found dead letters, want %d", len(dead), len(forged))
	}
	calls := upstreamCalls(e) - before
	t.Logf("%d real and %d forged webhooks: %d upstream calls (%d GET /job, %d exports)", len(own)+len(foreign), len(forged),
		calls, e.Sim.CallCount(simulator.EndpointJob), e.Sim.CallCount(simulator.EndpointExport))
	// One GET at most (the unknown-job token free at the start), and a handful of rounds.
	if calls > 6 {
		t.Errorf("%d upstream calls for 38 webhooks, want at most 6", calls)
	}
}

// TestForgedWebhookNeverSuppressesTheRealOne: a forged webhook bearing a real, unfinished job's id and a
// false completed_at reaches the verifier before the real one. The window comes from the job's record or
// the time the webhook arrived, never from the body, so the export finds the real job, and its result is
// published once when it finishes, although the real webhook (same Nats-Msg-Id) is a duplicate.
func TestForgedWebhookNeverSuppressesTheRealOne(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 7, QueueDelay: time.Millisecond, ProcessDelay: 1500 * time.Millisecond})
	ctx := natstest.Ctx(t)
	s := &scarcity{}
	f := e.fidelity(ctx)
	e.startVerifier(e.batched(s, f), func(c *Config) {
		c.UnknownRPM, c.UnknownLimiter = 60, e.UnknownBudget(60, 1)
	})
	forge := func(id string) []byte {
		b, _ := json.Marshal(map[string]any{"job_id": id, "status": "completed", "is_prohibited": false,
			"categories": map[string]any{"custom": map[string]any{}}, "completed_at": "2020-01-01T00:00:00Z"})
		return b
	}
	var ids []string
	for i, own := range []bool{true, false} {
		sub, err := e.API.Submit(ctx, "prompt", map[string]string{"prompt": "slow " + strconv.Itoa(i)}, "")
		if err != nil {
			t.Fatal(err)
		}
		if own {
			e.pendingRecord(sub.JobID, time.Now())
		}
		e.PublishWebhook("prompt", sub.JobID, forge(sub.JobID))
		ids = append(ids, sub.JobID)
	}
	for _, id := range ids {
		e.WaitSimStatus(id, "completed")
		e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false)) // the real one: a duplicate
	}
	e.WaitResults(contract.Default.SubjectResults+">", len(ids), 30*time.Second)
	e.waitLaneSettled(30 * time.Second)
	e.WaitSettled(10 * time.Second)
	results := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, ""))
	for _, id := range ids {
		if results[id] != 1 {
			t.Errorf("job %s: %d results, want 1", id, results[id])
		}
	}
	if dead := e.StreamMsgs(contract.Default.StreamDeadLetter, ""); len(dead) != 0 {
		t.Errorf("%d dead letters, want none: a forged webhook of a real job is not not_found", len(dead))
	}
}

// TestWindowEdgeIsNoFalseNotFound: a job with a record whose submission time is off by more than the
// window's leeway is not in the export round that should cover it; it is then fetched with GET /job, not
// declared not found.
func TestWindowEdgeIsNoFalseNotFound(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 9, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	ctx := natstest.Ctx(t)
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "edge"})
	e.pendingRecord(id, time.Now().Add(10*time.Minute)) // a clock far ahead of the upstream's
	s := &scarcity{}
	e.startVerifier(e.batched(s, e.fidelity(ctx)))
	exports, gets := e.Sim.CallCount(simulator.EndpointExport), e.Sim.CallCount(simulator.EndpointJob)
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	e.WaitResults(contract.Default.SubjectResults+">", 1, 20*time.Second)
	if src := sources(t, e)[id]; src != contract.SourceWebhook {
		t.Errorf("source %q, want webhook (fetched with GET /job after the export missed it)", src)
	}
	if n := e.Sim.CallCount(simulator.EndpointExport) - exports; n != 1 {
		t.Errorf("%d export calls, want 1", n)
	}
	if n := e.Sim.CallCount(simulator.EndpointJob) - gets; n != 1 {
		t.Errorf("%d GET /job calls, want 1", n)
	}
}

// TestCustomCategoriesTurnBatchesOff: the export has no custom categories, so an account with them is
// verified with GET /job only: from the start when moderation-config lists them, and at once when a GET
// /job shows them, until the next check.
func TestCustomCategoriesTurnBatchesOff(t *testing.T) {
	for _, tc := range []struct {
		name     string
		atStart  bool
		scarceAt int // the webhook from which calls are scarce
	}{{"listed at start", true, 0}, {"seen in a GET", false, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			simCfg := simulator.Config{Seed: 11, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond}
			if tc.atStart {
				simCfg.CustomCategories = []string{"brand_logos"}
			}
			e := newEnv(t, testworld.Single, simCfg)
			ctx := natstest.Ctx(t)
			f := e.fidelity(ctx)
			if !tc.atStart {
				if !f.Faithful() {
					t.Fatal("no custom categories at start, yet batches are off")
				}
				e.Sim.SetCustomCategories("brand_logos")
			}
			s := &scarcity{}
			s.capacity.Store(1000)
			e.startVerifier(e.batched(s, f))
			for i := range 3 {
				if i == tc.scarceAt {
					s.capacity.Store(0)
				}
				id := e.SubmitDirect("prompt", map[string]string{"prompt": "custom " + strconv.Itoa(i)})
				e.pendingRecord(id, time.Now())
				e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
				e.WaitResults(contract.Default.SubjectResults+">", i+1, 20*time.Second)
				if src := sources(t, e)[id]; src != contract.SourceWebhook {
					t.Errorf("job %d: source %q, want webhook (GET /job)", i, src)
				}
			}
			if n := e.Sim.CallCount(simulator.EndpointExport); n != 0 {
				t.Errorf("%d export calls with custom categories, want 0", n)
			}
		})
	}
}

// TestExportFailureFallsBackToGET: when the export fails (here a 404, as from an upstream that does not
// serve it), batches turn off and every webhook is verified with GET /job instead: nothing waits on a
// broken export, and none is dead-lettered for it.
func TestExportFailureFallsBackToGET(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 13, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	ctx := natstest.Ctx(t)
	f := e.fidelity(ctx)
	e.Sim.SetFault(simulator.EndpointExport, simulator.Fault{ErrorRate: 1, ErrorStatus: 404})
	s := &scarcity{} // always scarce
	e.startVerifier(e.batched(s, f))
	var ids []string
	for i := range 3 {
		id := e.SubmitDirect("prompt", map[string]string{"prompt": "broken export " + strconv.Itoa(i)})
		e.pendingRecord(id, time.Now())
		e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
		ids = append(ids, id)
	}
	e.WaitResults(contract.Default.SubjectResults+">", len(ids), 30*time.Second)
	e.WaitSettled(10 * time.Second)
	got := sources(t, e)
	for _, id := range ids {
		if got[id] != contract.SourceWebhook {
			t.Errorf("job %s: source %q, want webhook (GET /job)", id, got[id])
		}
	}
	if dead := e.StreamMsgs(contract.Default.StreamDeadLetter, ""); len(dead) != 0 {
		t.Errorf("%d dead letters, want none", len(dead))
	}
	if f.Faithful() {
		t.Error("batches still on after the export failed")
	}
}

// TestShutdownGivesBackWebhooksWaitingForTheirRound: a webhook waiting for its round holds no work in
// progress, so a shutdown gives it back at once (for the next verifier) instead of waiting for the round
// or for the shutdown timeout; the next verifier verifies it.
func TestShutdownGivesBackWebhooksWaitingForTheirRound(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 17, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	ctx := natstest.Ctx(t)
	s := &scarcity{} // always scarce
	stop := e.startVerifier(e.batched(s, e.fidelity(ctx)), func(c *Config) {
		c.BatchMin, c.BatchMaxWait, c.ShutdownTimeout = 1000, time.Hour, time.Hour // a round never starts
	})
	var ids []string
	for i := range 3 {
		id := e.SubmitDirect("prompt", map[string]string{"prompt": "waiting " + strconv.Itoa(i)})
		e.pendingRecord(id, time.Now())
		e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
		ids = append(ids, id)
	}
	cons, err := e.JS.Consumer(ctx, contract.Default.StreamWebhooks, contract.Default.ConsumerVerify)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		info, err := cons.Info(ctx)
		if err != nil || info.NumAckPending != len(ids) {
			return fmt.Errorf("%v in the verifier's hands, want %d (%v)", info, len(ids), err)
		}
		return nil
	})
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	natstest.RecvWithin(t, stopped, 20*time.Second) // not the hour of the round or of the shutdown timeout
	if n := e.Sim.CallCount(simulator.EndpointExport); n != 0 {
		t.Fatalf("%d export calls, want none: no round started", n)
	}
	s.capacity.Store(1000) // the next verifier is not short of calls
	e.startVerifier(e.batched(s, e.fidelity(ctx)))
	e.WaitResults(contract.Default.SubjectResults+">", len(ids), 20*time.Second)
}
