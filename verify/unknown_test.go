package verify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestUnknownLaneSurvivesRestart stops the verifier while the slow lane holds webhooks waiting for the
// unknown-job budget: they stay in SLOWLANE, and the next verifier finishes them.
func TestUnknownLaneSurvivesRestart(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	foreign := map[string]bool{}
	for j := range 3 {
		foreign[e.SubmitDirect("prompt", map[string]string{"prompt": "elsewhere " + strconv.Itoa(j)})] = true
	}
	spoofed := map[string]bool{}
	for range 5 {
		spoofed[uuid.NewString()] = true
	}
	for id := range foreign {
		e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	}
	for id := range spoofed {
		e.PublishWebhook("image", id, testworld.WebhookBody(id, true))
	}

	// One call a minute, burst one: the first unknown id takes the token, every other one moves to the
	// slow lane, whose next token is a minute away.
	stop := e.startVerifier(func(c *Config) { c.UnknownRPM, c.UnknownLimiter = 1, e.UnknownBudget(1, 1) })
	e.WaitSettled(20 * time.Second)
	laned := len(e.StreamMsgs(contract.Default.StreamSlowLane, "slowlane.unknown_job"))
	if laned == 0 {
		t.Fatal("nothing moved to the slow lane")
	}
	stop()

	ctx := natstest.CtxWithin(t, 10*time.Second)
	c, err := e.JS.Consumer(ctx, "SLOWLANE", contract.Default.ConsumerVerifyUnknown)
	if err != nil {
		t.Fatalf("slow-lane consumer: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("slow-lane consumer info: %v", err)
	}
	if waiting := info.NumPending + uint64(info.NumAckPending); waiting == 0 {
		t.Fatalf("slow lane empty at the restart although %d webhooks moved there", laned)
	}
	t.Logf("%d of %d unknown webhooks in the slow lane, %d unfinished at the restart", laned, len(foreign)+len(spoofed),
		info.NumPending+uint64(info.NumAckPending))

	e.startVerifier() // a generous unknown-job budget
	e.WaitResults(contract.Default.SubjectResults+">", len(foreign), 30*time.Second)
	e.waitLaneSettled(30 * time.Second)
	e.WaitSettled(10 * time.Second)

	ids := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, ""))
	if len(ids) != len(foreign) {
		t.Fatalf("results for %d jobs, want %d", len(ids), len(foreign))
	}
	for id, n := range ids {
		if !foreign[id] || n != 1 {
			t.Fatalf("job %s has %d results (foreign %v)", id, n, foreign[id])
		}
	}
	notFound := e.StreamMsgs(contract.Default.StreamDeadLetter, contract.Default.DeadLetterSubject(ReasonNotFound))
	if len(notFound) != len(spoofed) {
		t.Fatalf("%d not_found dead letters, want %d", len(notFound), len(spoofed))
	}
	for _, m := range notFound {
		if id, _ := parseJobID(m.Data); !spoofed[id] {
			t.Fatalf("not_found dead letter for %q", id)
		}
	}
}

// TestForeignJobVerifiedAtOnceWithoutFlood: with the default unknown-job budget and no flood, a webhook of
// a job submitted around the bridge spends a free token on the main lane and never waits in the slow lane.
func TestForeignJobVerifiedAtOnceWithoutFlood(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	e.startVerifier(func(c *Config) { c.UnknownRPM = 0 }) // the default
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "hello"})
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	e.WaitResults(contract.Default.SubjectResults+">", 1, 20*time.Second)
	e.WaitSettled(10 * time.Second)
	if n := len(e.StreamMsgs(contract.Default.StreamDeadLetter, "")); n != 0 {
		t.Fatalf("%d dead letters, want 0", n)
	}
	if got := testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_verify_outcomes_total", Label: "outcome", Value: "unknown_laned"}); got != 0 {
		t.Fatalf("unknown_laned = %v, want 0", got)
	}
}

func TestUnknownJobVerificationOff(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	e.startVerifier(func(c *Config) { c.UnknownRPM = UnknownOff })
	foreign := e.SubmitDirect("prompt", map[string]string{"prompt": "submitted elsewhere"})
	spoofed := uuid.NewString()
	e.PublishWebhook("prompt", foreign, testworld.WebhookBody(foreign, false))
	e.PublishWebhook("image", spoofed, testworld.WebhookBody(spoofed, true))
	e.WaitSettled(20 * time.Second)
	if n := e.Sim.CallCount(simulator.EndpointJob); n != 0 {
		t.Fatalf("%d upstream GETs, want 0 with unknown-job verification off", n)
	}
	if got := e.StreamMsgs(contract.Default.StreamResults, ""); len(got) != 0 {
		t.Fatalf("%d results, want 0", len(got))
	}
	dl := e.StreamMsgs(contract.Default.StreamDeadLetter, contract.Default.DeadLetterSubject(ReasonUnknownJob))
	if len(dl) != 2 {
		t.Fatalf("%d unknown_job dead letters, want 2", len(dl))
	}
	for _, m := range dl {
		if m.Header.Get(contract.HeaderReason) != ReasonUnknownJob {
			t.Fatalf("dead letter headers %v", m.Header)
		}
	}
	// No slow lane: the dead letters wait for an operator.
	if n := len(e.StreamMsgs(contract.Default.StreamSlowLane, "")); n != 0 {
		t.Fatalf("%d webhooks in the slow lane, want 0 with unknown-job verification off", n)
	}
	if _, err := e.JS.Consumer(natstest.CtxWithin(t, 5*time.Second), contract.Default.StreamSlowLane, contract.Default.ConsumerVerifyUnknown); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("slow-lane consumer: %v, want ErrConsumerNotFound with unknown-job verification off", err)
	}
}

func TestVerifierConfigUnknownBounds(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	for _, tt := range []struct {
		name string
		mod  func(*Config)
	}{
		{"negative rpm", func(c *Config) { c.UnknownRPM = -5 }},
		{"negative concurrency", func(c *Config) { c.UnknownConcurrency = -1 }},
		{"max ack pending under twice concurrency", func(c *Config) { c.UnknownConcurrency, c.UnknownMaxAckPending = 4, 7 }},
		{"no budget", func(*Config) {}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{JS: e.JS, API: e.API, Deliverer: e.Deliverer}
			tt.mod(&cfg)
			if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Unknown") {
				t.Fatalf("New = %v, want an error naming the Unknown… field", err)
			}
		})
	}
	v, err := New(Config{JS: e.JS, API: e.API, Deliverer: e.Deliverer, UnknownLimiter: e.UnknownBudget(DefaultUnknownRPM, 0)})
	if err != nil {
		t.Fatal(err)
	}
	// The slow lane holds many parked webhooks (delayed naks) while it checks the account's list.
	if c := v.cfg; c.UnknownRPM != DefaultUnknownRPM || c.UnknownConcurrency != 128 ||
		c.UnknownMaxAckPending != 8192 || c.UnknownConsumer != contract.Default.ConsumerVerifyUnknown {
		t.Fatalf("defaults %d/%d/%d/%q", c.UnknownRPM, c.UnknownConcurrency, c.UnknownMaxAckPending, c.UnknownConsumer)
	}
	lc := v.UnknownConsumerConfig()
	if lc.FilterSubject != "slowlane.unknown_job" || lc.MaxAckPending != 8192 || lc.AckPolicy != jetstream.AckExplicitPolicy {
		t.Fatalf("slow-lane consumer config %+v", lc)
	}
}

// TestUnknownTokensNeverWaitToTake: the unknown-job policy on the budget takes a free token at once,
// gives up on an empty budget within takeWait rather than waiting in line, tells about when the next token
// comes, and a wait in line ends with its ctx.
func TestUnknownTokensNeverWaitToTake(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	b := &unknownTokens{lim: e.UnknownBudget(1, 3), rate: 1.0 / 60} // one a minute, two at once
	if !b.take() {
		t.Fatal("take from a full budget failed")
	}
	if err := b.wait(natstest.CtxWithin(t, 5*time.Second)); err != nil {
		t.Fatalf("wait with a token left: %v", err)
	}
	start := time.Now()
	if b.take() {
		t.Fatal("take from an empty budget succeeded")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("take on an empty budget took %v; it must not wait in line", took)
	}
	if eta := b.eta(); eta < 30*time.Second || eta > time.Minute {
		t.Fatalf("eta %v on an empty budget of one a minute, want under a minute", eta)
	}
	ctx, cancel := context.WithCancel(natstest.CtxWithin(t, 10*time.Second))
	done := make(chan error, 1)
	go func() { done <- b.wait(ctx) }()
	cancel()
	if err := natstest.RecvWithin(t, done, 5*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait = %v", err)
	}
}

// TestListCheckSettlesABatchAtFullBudget pins issue 11's provenance by the account's list: webhooks of
// jobs submitted elsewhere (no record, no token or signature) that the unknown-job budget cannot take at
// once go to the slow lane, where one round of GET /jobs pages finds them all; they are then verified at
// the full budget, not one unknown-job token each. Forged ids in the same round are not found and stay
// on the unknown-job budget: never a result, and their GETs and the list pages together within it.
func TestListCheckSettlesABatchAtFullBudget(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 4, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	var real []string
	for range 20 {
		real = append(real, e.SubmitDirect("prompt", map[string]string{"prompt": "elsewhere"}))
	}
	var forged []string
	for range 10 {
		forged = append(forged, uuid.NewString())
	}
	const unknownRPM = 30 // a token every 2 s; a page or a forged GET each spends one
	e.startVerifier(func(c *Config) { c.UnknownRPM, c.UnknownLimiter = unknownRPM, e.UnknownBudget(unknownRPM, 1) })
	pages0, gets0 := e.Sim.CallCount(simulator.EndpointJobs), e.Sim.CallCount(simulator.EndpointJob)
	start := time.Now()
	for i, id := range append(append([]string{}, real...), forged...) {
		e.PublishWebhook("prompt", id, testworld.WebhookBody(id, i%2 == 0))
	}
	e.WaitResults(contract.Default.SubjectResults+">", len(real), 60*time.Second)
	elapsed := time.Since(start)
	pages := e.Sim.CallCount(simulator.EndpointJobs) - pages0
	viaList := testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_verify_provenance_total", Label: "via", Value: "list"})
	t.Logf("%d real results in %v; %d list pages; %v found in the list", len(real), elapsed, pages, viaList)
	if viaList < float64(len(real)-1) {
		t.Fatalf("%v of %d real jobs found in the list; want all but the one the unknown budget took at once", viaList, len(real))
	}
	if pages > 3 {
		t.Fatalf("%d list pages for %d ids in one window; a round settles every id on its page", pages, len(real)+len(forged))
	}
	ids := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))
	for _, id := range forged {
		if ids[id] > 0 {
			t.Fatalf("forged id %s has a result", id)
		}
	}
	for _, id := range real {
		if ids[id] != 1 {
			t.Fatalf("real job %s has %d results", id, ids[id])
		}
	}
	// Forged GETs so far and the pages together stay within burst + rate × time.
	forgedGets := e.Sim.CallCount(simulator.EndpointJob) - gets0 - len(real)
	allowance := 1 + int(float64(unknownRPM)/60*time.Since(start).Seconds()) + 1
	if forgedGets+pages > allowance {
		t.Fatalf("%d forged GETs and %d pages; the unknown-job budget allows %d so far", forgedGets, pages, allowance)
	}
}

// TestUnknownBudgetSharedByVerifiers pins issue 11's "in all" (and issue 14's unknown bucket in the
// shared budget): two verifier processes that share the account's unknown-job budget spend it once
// between them, so a forged flood costs at most BRIDGE_UNKNOWN_JOB_RPM a minute whatever the number of
// processes, not that many times it.
func TestUnknownBudgetSharedByVerifiers(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 6})
	const unknownRPM = 60 // a call a second, burst 5
	for i := range 2 {
		b, err := budget.New(budget.Config{KV: e.Res.Budget, Key: budget.KeyUnknown, RPM: unknownRPM,
			Instance: fmt.Sprint("verifier-", i), Log: e.Log})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(natstest.CtxWithin(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Stop)
		e.startVerifier(func(c *Config) { c.UnknownRPM, c.UnknownLimiter = unknownRPM, b })
	}
	start := time.Now()
	for range 60 {
		id := uuid.NewString()
		e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	}
	// Let the two processes spend what they can for a few seconds.
	natstest.WaitFor(t, 20*time.Second, func() error {
		if time.Since(start) < 6*time.Second {
			return errors.New("still spending")
		}
		return nil
	})
	calls := e.Sim.CallCount(simulator.EndpointJob) + e.Sim.CallCount(simulator.EndpointJobs)
	allowance := 5 + int(float64(unknownRPM)/60*time.Since(start).Seconds()) + 1
	t.Logf("%d unknown-job calls in %v by two verifiers sharing a %d/min budget (allowance %d)",
		calls, time.Since(start).Round(time.Millisecond), unknownRPM, allowance)
	if calls > allowance {
		t.Fatalf("%d calls; one shared budget allows %d (two budgets of their own would allow about twice)", calls, allowance)
	}
	if calls < 5 {
		t.Fatalf("%d calls: the shared budget was not spent at all", calls)
	}
}
