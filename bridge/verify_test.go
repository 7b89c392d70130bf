package bridge

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/internal/simtest"
	bjs "github.com/evershield/bridge/jetstream"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

func TestSubmitThenWebhookPublishesUpstreamTruth(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{ExtraFields: map[string]any{"future_field": "kept"}})
	e.startSubmitter()
	e.startVerifier()

	e.sim.SetHoldNew(true)
	reply := e.submit("prompt", map[string]string{"prompt": "a cat on a mat"})
	if reply.Status != upstream.StatusQueued {
		t.Fatalf("reply status %q, want queued", reply.Status)
	}
	id := reply.JobID
	// The record exists by the time the reply came.
	rec := e.record(id)
	if rec.State != jobs.StatePending || rec.Origin != jobs.OriginSubmit || rec.Modality != "prompt" {
		t.Fatalf("record after submit: %+v", rec)
	}
	if got := rec.Deadline.Sub(rec.SubmittedAt); got != 5*time.Minute {
		t.Fatalf("deadline %v after submission, want 5m", got)
	}
	sj, _ := e.sim.Job(id)
	if want := e.hookURL + "/webhook/prompt?token=" + testToken; sj.WebhookURL != want {
		t.Fatalf("webhook_url %q, want %q", sj.WebhookURL, want)
	}

	if err := e.sim.CompleteJob(id, simulator.Outcome{Prohibited: true, Reason: "unsafe"}); err != nil {
		t.Fatal(err)
	}
	e.waitResults(bjs.SubjectResults+">", 1, 15*time.Second)
	e.waitSettled(10 * time.Second)
	msgs := e.streamMsgs(bjs.StreamResults, bjs.SubjectResults+">")
	if len(msgs) != 1 {
		t.Fatalf("%d results, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Subject != bjs.ResultSubject("prompt") {
		t.Fatalf("subject %s, want results.prompt", m.Subject)
	}
	if got := m.Header.Get(bjs.HeaderBridgeSource); got != bjs.SourceWebhook {
		t.Fatalf("Bridge-Source %q", got)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != id {
		t.Fatalf("Nats-Msg-Id %q, want %s", got, id)
	}

	truth, err := e.api.GetJob(testCtx(t, 5*time.Second), id, upstream.ClassPoll)
	if err != nil {
		t.Fatal(err)
	}
	var want, got map[string]any
	_ = json.Unmarshal(truth.Raw, &want)
	if err := json.Unmarshal(m.Data, &got); err != nil {
		t.Fatal(err)
	}
	bridge, _ := got["bridge"].(map[string]any)
	delete(got, "bridge")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("result body\n got %v\nwant %v", got, want)
	}
	if got["future_field"] != "kept" || got["is_prohibited"] != true {
		t.Fatalf("result lost upstream fields: %v", got)
	}
	if bridge["source"] != bjs.SourceWebhook || bridge["received_at"] == nil || bridge["verified_at"] == nil {
		t.Fatalf("bridge block %v", bridge)
	}

	rec = e.waitState(id, jobs.StateDelivered, 5*time.Second)
	if rec.ResultSeq != m.Sequence || rec.Source != bjs.SourceWebhook || rec.Attempts != 1 ||
		rec.WebhookReceivedAt == nil || rec.LastStatus != upstream.StatusCompleted {
		t.Fatalf("record after delivery: %+v", rec)
	}
	if n := counterValue(t, e.reg, "bridge_verify_outcomes_total", "outcome", outcomePublished); n != 1 {
		t.Fatalf("published outcomes %v, want 1", n)
	}
}

func TestDuplicateWebhookPublishesOnce(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			e := newEnv(t, topo, simulator.Config{})
			const jobsN, dupes = 4, 10
			ids := make([]string, jobsN)
			for i := range ids {
				ids[i] = e.submitDirect("prompt", map[string]string{"prompt": "hello " + strconv.Itoa(i)})
			}
			gets := e.sim.CallCount(simulator.EndpointJob)
			e.startVerifier()

			// A burst before delivery: half the copies share the Nats-Msg-Id (the stream drops them), half
			// carry their own, as copies arriving after the duplicate window would.
			var wg sync.WaitGroup
			for _, id := range ids {
				for d := range dupes {
					msgID := id
					if d%2 == 1 {
						msgID = id + ".copy" + strconv.Itoa(d)
					}
					wg.Go(func() { e.publishWebhook("prompt", msgID, webhookBody(id, false)) })
				}
			}
			wg.Wait()
			e.waitSettled(20 * time.Second)
			counts := resultIDs(t, e.streamMsgs(bjs.StreamResults, bjs.SubjectResults+">"))
			for _, id := range ids {
				if counts[id] != 1 {
					t.Fatalf("job %s has %d results, want 1 (all: %v)", id, counts[id], counts)
				}
				e.waitState(id, jobs.StateDelivered, 5*time.Second)
			}
			if len(counts) != jobsN {
				t.Fatalf("results for %d jobs, want %d", len(counts), jobsN)
			}
			// One verifier process serialises a job's webhooks, so the burst cost one GET per job.
			if n := e.sim.CallCount(simulator.EndpointJob) - gets; n != jobsN {
				t.Fatalf("%d upstream GETs for the burst, want %d", n, jobsN)
			}

			// Copies after delivery cost no upstream call at all.
			gets = e.sim.CallCount(simulator.EndpointJob)
			for _, id := range ids {
				for d := range dupes {
					e.publishWebhook("prompt", id+".late-copy"+strconv.Itoa(d), webhookBody(id, true))
				}
			}
			e.waitSettled(20 * time.Second)
			if n := e.sim.CallCount(simulator.EndpointJob) - gets; n != 0 {
				t.Fatalf("%d upstream GETs for copies of delivered jobs, want 0", n)
			}
			if got := len(e.streamMsgs(bjs.StreamResults, bjs.SubjectResults+">")); got != jobsN {
				t.Fatalf("%d results, want %d", got, jobsN)
			}
		})
	}
}

func TestForgedVerdictGetsUpstreamVerdict(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	id := e.submitDirect("prompt", map[string]string{"prompt": "harmless"})
	e.startVerifier()
	forged, _ := json.Marshal(map[string]any{"job_id": id, "status": "completed", "is_prohibited": true,
		"reason": "forged", "categories": map[string]any{"custom": map[string]any{"evil": true}}})
	e.publishWebhook("prompt", id, forged)
	msgs := e.waitResults(bjs.SubjectResults+">", 1, 10*time.Second)
	var got map[string]any
	if err := json.Unmarshal(msgs[0].Data, &got); err != nil {
		t.Fatal(err)
	}
	if got["is_prohibited"] != false {
		t.Fatalf("is_prohibited %v, want the upstream's false", got["is_prohibited"])
	}
	if _, ok := got["reason"]; ok {
		t.Fatalf("forged reason leaked into the result: %v", got)
	}
	if cats := got["categories"].(map[string]any)["custom"].(map[string]any); len(cats) != 0 {
		t.Fatalf("forged categories leaked: %v", cats)
	}
}

func TestSpoofedWebhookNeverPublished(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	e.startVerifier()
	spoofed := uuid.NewString()
	body := webhookBody(spoofed, true)
	e.publishWebhook("image", spoofed, body)
	e.publishWebhook("prompt", "junk-1", []byte(`{"job_id": 42}`))
	e.waitSettled(10 * time.Second)

	if got := e.streamMsgs(bjs.StreamResults, ""); len(got) != 0 {
		t.Fatalf("%d results for a spoofed webhook, want 0", len(got))
	}
	if n := e.sim.CallCount(simulator.EndpointJob); n != 1 {
		t.Fatalf("%d upstream GETs, want exactly 1 (none for the malformed one)", n)
	}
	dl := e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonNotFound))
	if len(dl) != 1 {
		t.Fatalf("%d not_found dead letters, want 1", len(dl))
	}
	h := dl[0].Header
	if h.Get(bjs.HeaderReason) != ReasonNotFound || h.Get(bjs.HeaderAttempts) != "1" ||
		h.Get(bjs.HeaderOriginalSubject) != "webhooks.image" || h.Get(bjs.HeaderRemoteAddr) != "203.0.113.7:4711" ||
		!strings.HasPrefix(h.Get(jetstream.MsgIDHeader), spoofed+"."+ReasonNotFound+".") {
		t.Fatalf("dead letter headers %v", h)
	}
	if string(dl[0].Data) != string(body) {
		t.Fatalf("dead letter body %q", dl[0].Data)
	}
	if _, _, err := e.store.Get(testCtx(t, 5*time.Second), spoofed); err == nil {
		t.Fatalf("a JOBS record was created for a spoofed job")
	}
	if got := e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonMalformed)); len(got) != 1 {
		t.Fatalf("%d malformed dead letters, want 1", len(got))
	}
	if n := counterValue(t, e.reg, "bridge_deadletter_total", "reason", ReasonNotFound); n != 1 {
		t.Fatalf("bridge_deadletter_total{reason=not_found} = %v, want 1", n)
	}
}

func TestUpstreamFaultsStillOneResultPerJob(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			e := newEnv(t, topo, simulator.Config{
				Seed:          42,
				DuplicateRate: 0.3,
				Faults: map[string]simulator.Fault{
					simulator.EndpointJob: {ErrorRate: 0.25, RateLimitRate: 0.15, RetryAfter: time.Second},
				},
			})
			e.startSubmitter()
			e.startVerifier()
			const n = 30
			ids := make([]string, n)
			var wg sync.WaitGroup
			for i := range ids {
				modality := bjs.Modalities()[i%3].Name // prompt, image, video
				field := DefaultModalities()[modality]
				value := "text " + strconv.Itoa(i)
				if modality != "prompt" {
					value = fmt.Sprintf("https://cdn.example.com/%d.bin", i)
				}
				wg.Go(func() { ids[i] = e.submit(modality, map[string]string{field: value}).JobID })
			}
			wg.Wait()
			for _, id := range ids {
				e.waitState(id, jobs.StateDelivered, 60*time.Second)
			}
			e.waitSettled(30 * time.Second)
			counts := resultIDs(t, e.streamMsgs(bjs.StreamResults, bjs.SubjectResults+">"))
			if len(counts) != n {
				t.Fatalf("results for %d jobs, want %d", len(counts), n)
			}
			for _, id := range ids {
				if counts[id] != 1 {
					t.Fatalf("job %s has %d results, want 1", id, counts[id])
				}
			}
			if got := e.streamMsgs(bjs.StreamDeadLetter, ""); len(got) != 0 {
				t.Fatalf("%d dead letters, want 0", len(got))
			}
			if retries := counterValue(t, e.reg, "bridge_verify_outcomes_total", "outcome", outcomeRetry); retries == 0 {
				t.Fatalf("no retries counted; were faults injected?")
			}
		})
	}
}

func TestRestartMidFlightLosesNothing(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{
		Faults: map[string]simulator.Fault{simulator.EndpointJob: {Latency: 100 * time.Millisecond}},
	})
	const n = 24
	ids := make([]string, n)
	for i := range ids {
		ids[i] = e.submitDirect("prompt", map[string]string{"prompt": "job " + strconv.Itoa(i)})
	}
	for _, id := range ids {
		e.publishWebhook("prompt", id, webhookBody(id, false))
	}
	// A verifier that is stopped hard in the middle: handlers still waiting for the upstream are
	// cancelled and give their webhooks back.
	// A short AckWait: webhooks naked just before the server went down are redelivered only once their
	// ack wait expires after the restart (the server does not persist its redelivery queue).
	stop := e.startVerifier(func(c *VerifierConfig) {
		c.Concurrency, c.ShutdownTimeout, c.AckWait = 4, time.Millisecond, 2*time.Second
	})
	e.waitResults(bjs.SubjectResults+">", 4, 20*time.Second)
	stop()

	e.node.Restart(t)
	// More webhooks arrive while no verifier runs: a copy of every job, and some new jobs.
	more := make([]string, 4)
	for i := range more {
		more[i] = e.submitDirect("prompt", map[string]string{"prompt": "late job " + strconv.Itoa(i)})
	}
	natstestWaitPublish(t, e, ids, more)

	e.startVerifier(func(c *VerifierConfig) { c.Concurrency, c.AckWait = 8, 2*time.Second })
	all := append(ids, more...)
	for _, id := range all {
		e.waitState(id, jobs.StateDelivered, 30*time.Second)
	}
	e.waitSettled(20 * time.Second)
	counts := resultIDs(t, e.streamMsgs(bjs.StreamResults, bjs.SubjectResults+">"))
	if len(counts) != len(all) {
		t.Fatalf("results for %d jobs, want %d", len(counts), len(all))
	}
	for _, id := range all {
		if counts[id] != 1 {
			t.Fatalf("job %s has %d results, want 1", id, counts[id])
		}
	}
}

// natstestWaitPublish publishes copies of ids and webhooks of more after the server restart, retrying
// while the client reconnects.
func natstestWaitPublish(t *testing.T, e *env, ids, more []string) {
	t.Helper()
	pending := map[string]string{}
	for i, id := range ids {
		if i%2 == 0 {
			pending[id+".after-restart"] = id
		}
	}
	for _, id := range more {
		pending[id] = id
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(pending) > 0 {
		for msgID, id := range maps.Clone(pending) {
			ctx := testCtx(t, 2*time.Second)
			if _, err := e.js.PublishMsg(ctx, webhookMsg("prompt", msgID, webhookBody(id, false), time.Now(), "198.51.100.1:1")); err == nil {
				delete(pending, msgID)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not publish %d webhooks after the restart", len(pending))
		}
	}
}

func TestNotTerminalRetriesThenExhaustsToReconciler(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	e.startSubmitter()
	e.sim.SetHoldNew(true)
	id := e.submit("video", map[string]string{"video_url": "https://cdn.example.com/v.mp4"}).JobID
	e.waitSimStatus(id, upstream.StatusProcessing)
	e.startVerifier(func(c *VerifierConfig) {
		c.MaxAttempts = 3
		c.RetryBase = 10 * time.Millisecond
		c.RetryMax = 50 * time.Millisecond
	})
	// A forged "completed" webhook for a job still processing.
	e.publishWebhook("video", id, webhookBody(id, true))
	e.waitSettled(10 * time.Second)
	if got := e.streamMsgs(bjs.StreamResults, ""); len(got) != 0 {
		t.Fatalf("%d results for an unfinished job, want 0", len(got))
	}
	dl := e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonAttemptsExhausted))
	if len(dl) != 1 || dl[0].Header.Get(bjs.HeaderAttempts) != "3" {
		t.Fatalf("dead letters %v, want one attempts_exhausted after 3 attempts", dl)
	}
	rec := e.record(id)
	if rec.State != jobs.StatePending || rec.Attempts != 3 || rec.LastStatus != upstream.StatusProcessing {
		t.Fatalf("record %+v: want pending (for the reconciler) with 3 attempts", rec)
	}
	if n := e.sim.CallCount(simulator.EndpointJob); n != 3 {
		t.Fatalf("%d GETs, want 3", n)
	}
}

func TestFinalUpstreamErrorDeadLetters(t *testing.T) {
	e := newEnv(t, topology{"single", 1}, simulator.Config{})
	id := e.submitDirect("prompt", map[string]string{"prompt": "x"})
	// A client whose key the upstream does not accept: 401 is final.
	e.api = simtest.Client(t, e.sim, func(c *upstream.Config) { c.APIKey = "wrong_key"; c.Log = e.log })
	e.startVerifier()
	e.publishWebhook("prompt", id, webhookBody(id, false))
	e.waitSettled(10 * time.Second)
	if got := e.streamMsgs(bjs.StreamDeadLetter, bjs.DeadLetterSubject(ReasonUpstreamPrefix+"401")); len(got) != 1 {
		t.Fatalf("%d upstream_401 dead letters, want 1", len(got))
	}
	if got := e.streamMsgs(bjs.StreamResults, ""); len(got) != 0 {
		t.Fatalf("%d results, want 0", len(got))
	}
}
