package bridge

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	bjs "github.com/evershield/bridge/jetstream"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestForgedFloodCannotSpendUpstreamBudget floods the verifier with forged webhooks carrying random job
// ids while real jobs complete: every real job is delivered, the upstream calls spent on unknown ids stay
// within the unknown-job budget over the test's window, nothing forged is published, and every forged
// webhook ends in DEADLETTER.
func TestForgedFloodCannotSpendUpstreamBudget(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	const (
		forged      = 300
		real        = 10
		unknownRPM  = 300 // five per second
		burst       = 2
		waitingSize = 20
	)
	start := time.Now()
	e.startSubmitter()
	e.startVerifier(func(c *VerifierConfig) {
		c.UnknownRPM, c.UnknownBurst, c.UnknownMaxWaiting = unknownRPM, burst, waitingSize
		c.MaxAttempts, c.RetryBase, c.RetryMax = 4, 20*time.Millisecond, 200*time.Millisecond
	})
	forgedIDs := make(map[string]bool, forged)
	for i := range forged {
		id := uuid.NewString()
		forgedIDs[id] = true
		e.publishWebhook(bjs.Modalities[i%3], id, webhookBody(id, false))
		if i == forged/2 {
			// Real jobs in the middle of the flood, their webhooks queued behind forged ones.
			for j := range real {
				e.submit("prompt", map[string]string{"prompt": "real " + strconv.Itoa(j)})
			}
		}
	}

	results := e.waitResults(bjs.SubjectResults+">", real, 60*time.Second)
	e.waitSettled(60 * time.Second)
	window := time.Since(start)

	results = e.streamMsgs(bjs.StreamResults, "")
	ids := resultIDs(t, results)
	if len(results) != real || len(ids) != real {
		t.Fatalf("%d results for %d jobs, want %d real ones once each", len(results), len(ids), real)
	}
	for id := range ids {
		if forgedIDs[id] {
			t.Fatalf("forged job %s published", id)
		}
		if rec := e.record(id); rec.State != jobs.StateDelivered {
			t.Fatalf("real job %s is %s", id, rec.State)
		}
	}

	unknownGets := 0
	for _, c := range e.sim.Calls(simulator.EndpointJob) {
		if forgedIDs[c.Path[strings.LastIndexByte(c.Path, '/')+1:]] {
			unknownGets++
		}
	}
	bound := burst + int(math.Ceil(window.Minutes()*unknownRPM))
	if unknownGets > bound {
		t.Fatalf("%d upstream GETs for forged ids over %v, want at most %d (burst %d + %d/min)", unknownGets,
			window, bound, burst, unknownRPM)
	}
	t.Logf("%d forged webhooks cost %d upstream GETs over %v (bound %d)", forged, unknownGets, window, bound)

	dead := 0
	for _, reason := range []string{ReasonNotFound, ReasonUnknownJob, ReasonAttemptsExhausted} {
		n := len(e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(reason)))
		t.Logf("dead letters %s: %d", reason, n)
		dead += n
	}
	if dead != forged {
		t.Fatalf("%d dead letters, want one per forged webhook (%d)", dead, forged)
	}
	if n := len(e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonUnknownJob))); n == 0 {
		t.Error("no webhook shed as unknown_job although the backlog bound was far exceeded")
	}
	if n := len(e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonNotFound))); n != unknownGets {
		t.Errorf("%d not_found dead letters, want one per GET for a forged id (%d)", n, unknownGets)
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
}

func TestVerifierConfigUnknownBounds(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	for _, tt := range []struct {
		name string
		mod  func(*VerifierConfig)
	}{
		{"negative rpm", func(c *VerifierConfig) { c.UnknownRPM = -5 }},
		{"waiting over half of MaxAckPending", func(c *VerifierConfig) { c.MaxAckPending, c.UnknownMaxWaiting = 1000, 501 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := VerifierConfig{JS: e.js, API: e.api, Deliverer: e.deliverer}
			tt.mod(&cfg)
			if _, err := NewVerifier(cfg); err == nil || !strings.Contains(err.Error(), "Unknown") {
				t.Fatalf("NewVerifier = %v, want an error naming the Unknown… field", err)
			}
		})
	}
	v, err := NewVerifier(VerifierConfig{JS: e.js, API: e.api, Deliverer: e.deliverer})
	if err != nil {
		t.Fatal(err)
	}
	if c := v.cfg; c.UnknownRPM != DefaultUnknownRPM || c.UnknownBurst != 1 || c.UnknownMaxWaiting != c.MaxAckPending/4 {
		t.Fatalf("defaults %d/%d/%d", c.UnknownRPM, c.UnknownBurst, c.UnknownMaxWaiting)
	}
}
