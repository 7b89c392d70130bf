package verify

import (
	"encoding/json"
	"errors"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

func TestDuplicateWebhookPublishesOnce(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) {
			e := newEnv(t, topo, simulator.Config{})
			const jobsN, dupes = 4, 10
			ids := make([]string, jobsN)
			for i := range ids {
				ids[i] = e.SubmitDirect("prompt", map[string]string{"prompt": "hello " + strconv.Itoa(i)})
			}
			gets := e.Sim.CallCount(simulator.EndpointJob)
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
					wg.Go(func() { e.PublishWebhook("prompt", msgID, testworld.WebhookBody(id, false)) })
				}
			}
			wg.Wait()
			e.WaitSettled(20 * time.Second)
			counts := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))
			for _, id := range ids {
				if counts[id] != 1 {
					t.Fatalf("job %s has %d results, want 1 (all: %v)", id, counts[id], counts)
				}
				e.WaitState(id, jobs.StateDelivered, 5*time.Second)
			}
			if len(counts) != jobsN {
				t.Fatalf("results for %d jobs, want %d", len(counts), jobsN)
			}
			// One verifier process serialises a job's webhooks, so the burst cost one GET per job.
			if n := e.Sim.CallCount(simulator.EndpointJob) - gets; n != jobsN {
				t.Fatalf("%d upstream GETs for the burst, want %d", n, jobsN)
			}

			// Copies after delivery cost no upstream call at all.
			gets = e.Sim.CallCount(simulator.EndpointJob)
			for _, id := range ids {
				for d := range dupes {
					e.PublishWebhook("prompt", id+".late-copy"+strconv.Itoa(d), testworld.WebhookBody(id, true))
				}
			}
			e.WaitSettled(20 * time.Second)
			if n := e.Sim.CallCount(simulator.EndpointJob) - gets; n != 0 {
				t.Fatalf("%d upstream GETs for copies of delivered jobs, want 0", n)
			}
			if got := len(e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">")); got != jobsN {
				t.Fatalf("%d results, want %d", got, jobsN)
			}
		})
	}
}

func TestForgedVerdictGetsUpstreamVerdict(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "harmless"})
	e.startVerifier()
	forged, _ := json.Marshal(map[string]any{"job_id": id, "status": "completed", "is_prohibited": true,
		"reason": "forged", "categories": map[string]any{"custom": map[string]any{"evil": true}}})
	e.PublishWebhook("prompt", id, forged)
	msgs := e.WaitResults(contract.Default.SubjectResults+">", 1, 10*time.Second)
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
	e := newEnv(t, testworld.Single, simulator.Config{})
	e.startVerifier()
	spoofed := uuid.NewString()
	body := testworld.WebhookBody(spoofed, true)
	e.PublishWebhook("image", spoofed, body)
	e.PublishWebhook("prompt", "junk-1", []byte(`{"job_id": 42}`))
	e.WaitSettled(10 * time.Second)

	if got := e.StreamMsgs(contract.Default.StreamResults, ""); len(got) != 0 {
		t.Fatalf("%d results for a spoofed webhook, want 0", len(got))
	}
	if n := e.Sim.CallCount(simulator.EndpointJob); n != 1 {
		t.Fatalf("%d upstream GETs, want exactly 1 (none for the malformed one)", n)
	}
	dl := e.StreamMsgs(contract.Default.StreamDeadLetter, contract.Default.DeadLetterSubject(ReasonNotFound))
	if len(dl) != 1 {
		t.Fatalf("%d not_found dead letters, want 1", len(dl))
	}
	h := dl[0].Header
	if h.Get(contract.HeaderReason) != ReasonNotFound || h.Get(contract.HeaderAttempts) != "1" ||
		h.Get(contract.HeaderOriginalSubject) != "webhooks.image" || h.Get(contract.HeaderRemoteAddr) != "203.0.113.7:4711" ||
		!strings.HasPrefix(h.Get(jetstream.MsgIDHeader), spoofed+"."+ReasonNotFound+".") {
		t.Fatalf("dead letter headers %v", h)
	}
	if string(dl[0].Data) != string(body) {
		t.Fatalf("dead letter body %q", dl[0].Data)
	}
	if _, _, err := e.Store.Get(natstest.CtxWithin(t, 5*time.Second), spoofed); err == nil {
		t.Fatalf("a JOBS record was created for a spoofed job")
	}
	if got := e.StreamMsgs(contract.Default.StreamDeadLetter, contract.Default.DeadLetterSubject(ReasonMalformed)); len(got) != 1 {
		t.Fatalf("%d malformed dead letters, want 1", len(got))
	}
	if n := testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_deadletter_total", Label: "reason", Value: ReasonNotFound}); n != 1 {
		t.Fatalf("bridge_deadletter_total{reason=not_found} = %v, want 1", n)
	}
}

func TestRestartMidFlightLosesNothing(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{
		Faults: map[string]simulator.Fault{simulator.EndpointJob: {Latency: 100 * time.Millisecond}},
	})
	const n = 24
	ids := make([]string, n)
	for i := range ids {
		ids[i] = e.SubmitDirect("prompt", map[string]string{"prompt": "job " + strconv.Itoa(i)})
	}
	for _, id := range ids {
		e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	}
	// A verifier that is stopped hard in the middle: handlers still waiting for the upstream are
	// cancelled and give their webhooks back.
	// A short AckWait: webhooks naked just before the server went down are redelivered only once their
	// ack wait expires after the restart (the server does not persist its redelivery queue).
	stop := e.startVerifier(func(c *Config) {
		c.Concurrency, c.ShutdownTimeout, c.AckWait = 4, time.Millisecond, 2*time.Second
	})
	e.WaitResults(contract.Default.SubjectResults+">", 4, 20*time.Second)
	stop()

	e.Node.Restart(t)
	// More webhooks arrive while no verifier runs: a copy of every job, and some new jobs.
	more := make([]string, 4)
	for i := range more {
		more[i] = e.SubmitDirect("prompt", map[string]string{"prompt": "late job " + strconv.Itoa(i)})
	}
	natstestWaitPublish(t, e, ids, more)

	e.startVerifier(func(c *Config) { c.Concurrency, c.AckWait = 8, 2*time.Second })
	all := append(ids, more...)
	for _, id := range all {
		e.WaitState(id, jobs.StateDelivered, 30*time.Second)
	}
	e.WaitSettled(20 * time.Second)
	counts := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))
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
			ctx := natstest.CtxWithin(t, 2*time.Second)
			if _, err := e.JS.PublishMsg(ctx, testworld.WebhookMsg("prompt", msgID, testworld.WebhookBody(id, false), "198.51.100.1:1")); err == nil {
				delete(pending, msgID)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not publish %d webhooks after the restart", len(pending))
		}
	}
}

// TestRefusedKeyPausesVerification pins issue 11: an upstream 401, 402 or 403 is wrong for every job, not
// for this one, so verification pauses, loudly and with a metric, and the webhook is kept, never
// dead-lettered; once the account is fixed, the job gets its result.
func TestRefusedKeyPausesVerification(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "x"})
	e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{ErrorRate: 1, ErrorStatus: 403}) // the key lost its scope
	e.startVerifier(func(c *Config) { c.AuthPause = 300 * time.Millisecond })
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	natstest.WaitFor(t, 10*time.Second, func() error {
		if testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_verify_outcomes_total", Label: "outcome", Value: "auth_paused"}) < 2 {
			return errors.New("verification has not paused yet")
		}
		return nil
	})
	if got := e.StreamMsgs(contract.Default.StreamDeadLetter, ""); len(got) != 0 {
		t.Fatalf("%d dead letters while the key was refused, want 0", len(got))
	}
	e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{})
	e.WaitResults(contract.Default.SubjectResults+">", 1, 10*time.Second)
	if got := e.StreamMsgs(contract.Default.StreamDeadLetter, ""); len(got) != 0 {
		t.Fatalf("%d dead letters, want 0", len(got))
	}
}
