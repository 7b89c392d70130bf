package bridge

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/internal/natstest"
	bjs "github.com/evershield/bridge/jetstream"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestUnknownJobsDeliveredUnderForgedFlood floods the verifier with forged webhooks carrying random job
// ids, interleaved with webhooks of legitimate jobs submitted around the bridge (unknown ids too), while
// jobs submitted through the bridge complete: every legitimate job ends with exactly one result, nothing
// forged is published, every forged webhook ends as a not_found dead letter after exactly one GET (in the
// main lane or the slow lane), and the upstream calls spent on unknown ids stay within the unknown-job
// budget over the test's window.
func TestUnknownJobsDeliveredUnderForgedFlood(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	const (
		forged     = 200
		direct     = 8 // submitted around the bridge
		viaBridge  = 8
		unknownRPM = 900 // fifteen per second
		burst      = 2
	)
	e.startSubmitter()
	directIDs := make(map[string]bool, direct)
	var directOrder []string
	for j := range direct {
		id := e.submitDirect("prompt", map[string]string{"prompt": "elsewhere " + strconv.Itoa(j)})
		directIDs[id] = true
		directOrder = append(directOrder, id)
	}
	// The flood is stored before the verifier starts, so the main lane meets far more unknown ids at
	// once than its budget has tokens; the legitimate foreign webhooks are spread through it.
	forgedIDs := make(map[string]bool, forged)
	for i := range forged {
		id := uuid.NewString()
		forgedIDs[id] = true
		e.publishWebhook(bjs.Modalities()[i%3].Name, id, webhookBody(id, false))
		if k := i / (forged / direct); i%(forged/direct) == 0 && k < direct {
			e.publishWebhook("prompt", directOrder[k], webhookBody(directOrder[k], false))
		}
	}

	start := time.Now()
	e.startVerifier(func(c *VerifierConfig) {
		c.UnknownRPM, c.UnknownBurst, c.UnknownConcurrency = unknownRPM, burst, 4
	})
	bridgeIDs := make(map[string]bool, viaBridge)
	for j := range viaBridge {
		bridgeIDs[e.submit("prompt", map[string]string{"prompt": "via bridge " + strconv.Itoa(j)}).JobID] = true
	}

	e.waitResults(bjs.SubjectResults+">", direct+viaBridge, 90*time.Second)
	e.waitSettled(30 * time.Second)
	e.waitLaneSettled(90 * time.Second)
	window := time.Since(start)

	results := e.streamMsgs(bjs.StreamResults, "")
	ids := resultIDs(t, results)
	if len(results) != direct+viaBridge {
		t.Fatalf("%d results, want %d (one per legitimate job)", len(results), direct+viaBridge)
	}
	for id, n := range ids {
		switch {
		case forgedIDs[id]:
			t.Fatalf("forged job %s published", id)
		case n != 1:
			t.Fatalf("job %s has %d results", id, n)
		case !directIDs[id] && !bridgeIDs[id]:
			t.Fatalf("result for a job nobody submitted: %s", id)
		}
		if rec := e.record(id); rec.State != jobs.StateDelivered {
			t.Fatalf("job %s is %s", id, rec.State)
		}
	}
	for id := range directIDs {
		if rec := e.record(id); rec.Origin != jobs.OriginWebhook {
			t.Fatalf("foreign job %s has origin %q", id, rec.Origin)
		}
	}

	forgedGets, unknownGets := 0, 0
	for _, c := range e.sim.Calls(simulator.EndpointJob) {
		id := c.Path[strings.LastIndexByte(c.Path, '/')+1:]
		if forgedIDs[id] {
			forgedGets++
		}
		if forgedIDs[id] || directIDs[id] {
			unknownGets++
		}
	}
	bound := burst + int(math.Ceil(window.Seconds()*unknownRPM/60))
	if unknownGets > bound {
		t.Fatalf("%d upstream GETs for unknown ids over %v, want at most %d (burst %d + %d/min)", unknownGets,
			window, bound, burst, unknownRPM)
	}
	if forgedGets != forged {
		t.Fatalf("%d GETs for %d forged ids, want exactly one each", forgedGets, forged)
	}

	notFound := e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonNotFound))
	if len(notFound) != forged {
		t.Fatalf("%d not_found dead letters, want one per forged webhook (%d)", len(notFound), forged)
	}
	for _, m := range notFound {
		if id, _ := parseJobID(m.Data); !forgedIDs[id] {
			t.Fatalf("not_found dead letter for %q, which is not forged", id)
		}
		if orig := m.Header.Get(bjs.HeaderOriginalSubject); !strings.HasPrefix(orig, bjs.SubjectWebhooks) {
			t.Fatalf("not_found dead letter has original subject %q, want the webhook's", orig)
		}
	}
	if n := len(e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonAttemptsExhausted))); n != 0 {
		t.Fatalf("%d attempts_exhausted dead letters, want 0", n)
	}

	laned := e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonUnknownJob))
	if len(laned) == 0 {
		t.Fatal("nothing moved to the slow lane although the flood far exceeded the unknown-job burst")
	}
	if got := counterValue(t, e.reg, "bridge_verify_outcomes_total", "outcome", outcomeUnknownLaned); int(got) != len(laned) {
		t.Fatalf("unknown_laned outcomes %v, want %d (one per slow-lane message)", got, len(laned))
	}
	if got := counterValue(t, e.reg, "bridge_deadletter_total", "reason", ReasonUnknownJob); got != 0 {
		t.Fatalf("bridge_deadletter_total{reason=unknown_job} = %v, want 0: the slow lane is not a dead end", got)
	}
	lanedDirect := 0
	for _, m := range laned {
		id, _ := parseJobID(m.Data)
		if directIDs[id] {
			lanedDirect++
		}
		if !strings.HasPrefix(m.Header.Get(jetstream.MsgIDHeader), id+"."+ReasonUnknownJob+".") || m.Header.Get(bjs.HeaderReason) != ReasonUnknownJob ||
			!strings.HasPrefix(m.Header.Get(bjs.HeaderOriginalSubject), bjs.SubjectWebhooks) ||
			m.Header.Get(bjs.HeaderReceivedAt) == "" || m.Header.Get(bjs.HeaderRemoteAddr) == "" || m.Header.Get(bjs.HeaderAttempts) == "" {
			t.Fatalf("slow-lane message headers %v", m.Header)
		}
	}
	t.Logf("%d unknown ids (%d forged) cost %d upstream GETs over %v (bound %d); %d went through the slow lane, %d of them legitimate",
		forged+direct, forged, unknownGets, window, bound, len(laned), lanedDirect)
}

// TestUnknownLaneSurvivesRestart stops the verifier while the slow lane holds webhooks waiting for the
// unknown-job budget: they stay in DEADLETTER, and the next verifier finishes them.
func TestUnknownLaneSurvivesRestart(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	foreign := map[string]bool{}
	for j := range 3 {
		foreign[e.submitDirect("prompt", map[string]string{"prompt": "elsewhere " + strconv.Itoa(j)})] = true
	}
	spoofed := map[string]bool{}
	for range 5 {
		spoofed[uuid.NewString()] = true
	}
	for id := range foreign {
		e.publishWebhook("prompt", id, webhookBody(id, false))
	}
	for id := range spoofed {
		e.publishWebhook("image", id, webhookBody(id, true))
	}

	// One call a minute, burst one: the first unknown id takes the token, every other one moves to the
	// slow lane, whose next token is a minute away.
	stop := e.startVerifier(func(c *VerifierConfig) { c.UnknownRPM, c.UnknownBurst = 1, 1 })
	e.waitSettled(20 * time.Second)
	laned := len(e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonUnknownJob)))
	if laned == 0 {
		t.Fatal("nothing moved to the slow lane")
	}
	stop()

	ctx := testCtx(t, 10*time.Second)
	c, err := e.js.Consumer(ctx, bjs.StreamDeadLetter, bjs.ConsumerVerifyUnknown)
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
	e.waitResults(bjs.SubjectResults+">", len(foreign), 30*time.Second)
	e.waitLaneSettled(30 * time.Second)
	e.waitSettled(10 * time.Second)

	ids := resultIDs(t, e.streamMsgs(bjs.StreamResults, ""))
	if len(ids) != len(foreign) {
		t.Fatalf("results for %d jobs, want %d", len(ids), len(foreign))
	}
	for id, n := range ids {
		if !foreign[id] || n != 1 {
			t.Fatalf("job %s has %d results (foreign %v)", id, n, foreign[id])
		}
	}
	notFound := e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonNotFound))
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
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	e.startVerifier(func(c *VerifierConfig) { c.UnknownRPM, c.UnknownBurst = 0, 0 }) // the defaults
	id := e.submitDirect("prompt", map[string]string{"prompt": "hello"})
	e.publishWebhook("prompt", id, webhookBody(id, false))
	e.waitResults(bjs.SubjectResults+">", 1, 20*time.Second)
	e.waitSettled(10 * time.Second)
	if n := len(e.streamMsgs(bjs.StreamDeadLetter, "")); n != 0 {
		t.Fatalf("%d dead letters, want 0", n)
	}
	if got := counterValue(t, e.reg, "bridge_verify_outcomes_total", "outcome", outcomeUnknownLaned); got != 0 {
		t.Fatalf("unknown_laned = %v, want 0", got)
	}
}

func TestUnknownJobVerificationOff(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	e.startVerifier(func(c *VerifierConfig) { c.UnknownRPM = UnknownOff })
	foreign := e.submitDirect("prompt", map[string]string{"prompt": "submitted elsewhere"})
	spoofed := uuid.NewString()
	e.publishWebhook("prompt", foreign, webhookBody(foreign, false))
	e.publishWebhook("image", spoofed, webhookBody(spoofed, true))
	e.waitSettled(20 * time.Second)
	if n := e.sim.CallCount(simulator.EndpointJob); n != 0 {
		t.Fatalf("%d upstream GETs, want 0 with unknown-job verification off", n)
	}
	if got := e.streamMsgs(bjs.StreamResults, ""); len(got) != 0 {
		t.Fatalf("%d results, want 0", len(got))
	}
	dl := e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonUnknownJob))
	if len(dl) != 2 {
		t.Fatalf("%d unknown_job dead letters, want 2", len(dl))
	}
	for _, m := range dl {
		if m.Header.Get(bjs.HeaderReason) != ReasonUnknownJob {
			t.Fatalf("dead letter headers %v", m.Header)
		}
	}
	// No slow lane: the dead letters wait for an operator.
	if _, err := e.js.Consumer(testCtx(t, 5*time.Second), bjs.StreamDeadLetter, bjs.ConsumerVerifyUnknown); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("slow-lane consumer: %v, want ErrConsumerNotFound with unknown-job verification off", err)
	}
}

func TestVerifierConfigUnknownBounds(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	for _, tt := range []struct {
		name string
		mod  func(*VerifierConfig)
	}{
		{"negative rpm", func(c *VerifierConfig) { c.UnknownRPM = -5 }},
		{"negative concurrency", func(c *VerifierConfig) { c.UnknownConcurrency = -1 }},
		{"max ack pending under twice concurrency", func(c *VerifierConfig) { c.UnknownConcurrency, c.UnknownMaxAckPending = 4, 7 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := VerifierConfig{JS: e.js, API: e.api, Deliverer: e.deliverer}
			tt.mod(&cfg)
			if _, err := NewVerifier(cfg); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Unknown") {
				t.Fatalf("NewVerifier = %v, want an error naming the Unknown… field", err)
			}
		})
	}
	v, err := NewVerifier(VerifierConfig{JS: e.js, API: e.api, Deliverer: e.deliverer})
	if err != nil {
		t.Fatal(err)
	}
	if c := v.cfg; c.UnknownRPM != DefaultUnknownRPM || c.UnknownBurst != 1 || c.UnknownConcurrency != 4 ||
		c.UnknownMaxAckPending != 64 || c.UnknownConsumer != bjs.ConsumerVerifyUnknown {
		t.Fatalf("defaults %d/%d/%d/%d/%q", c.UnknownRPM, c.UnknownBurst, c.UnknownConcurrency, c.UnknownMaxAckPending, c.UnknownConsumer)
	}
	lc := v.UnknownConsumerConfig()
	if lc.FilterSubject != bjs.DeadLetterSubject(ReasonUnknownJob) || lc.MaxAckPending != 64 || lc.AckPolicy != jetstream.AckExplicitPolicy {
		t.Fatalf("slow-lane consumer config %+v", lc)
	}
}

// TestTokenBucketWaitersGoFirst: a token reserved by a waiter is not free for take, and a cancelled wait
// gives its token back.
func TestTokenBucketWaitersGoFirst(t *testing.T) {
	b := newTokenBucket(1, 2) // one a minute: nothing is earned during the test worth speaking of
	if !b.take() {
		t.Fatal("take from a full bucket failed")
	}
	if err := b.wait(testCtx(t, 5*time.Second), nil); err != nil {
		t.Fatalf("wait with a token left: %v", err)
	}
	if b.take() {
		t.Fatal("take from an empty bucket succeeded")
	}

	ctx, cancel := context.WithCancel(testCtx(t, 10*time.Second))
	waiting := make(chan int, 4)
	done := make(chan error, 1)
	go func() { done <- b.wait(ctx, func(n int) { waiting <- n }) }()
	if n := natstest.RecvWithin(t, waiting, 5*time.Second); n != 1 {
		t.Fatalf("%d waiters, want 1", n)
	}
	if b.take() {
		t.Fatal("take succeeded while a waiter holds the next token")
	}
	cancel()
	if err := natstest.RecvWithin(t, done, 5*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait = %v", err)
	}
	if n := natstest.RecvWithin(t, waiting, 5*time.Second); n != 0 {
		t.Fatalf("%d waiters after the cancel, want 0", n)
	}
	b.mu.Lock()
	tokens := b.tokens
	b.mu.Unlock()
	if tokens < 0 {
		t.Fatalf("balance %v after the cancelled wait, want its token given back", tokens)
	}
}
