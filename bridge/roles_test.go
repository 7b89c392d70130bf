package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/submit"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
	"github.com/evershield/bridge/verify"
)

// TestSubmitThenWebhookPublishesUpstreamTruth and the other tests in this file need both the submit
// service and the verifier: what the application wires together.
func TestSubmitThenWebhookPublishesUpstreamTruth(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{ExtraFields: map[string]any{"future_field": "kept"}})
	e.startSubmitter()
	e.startVerifier()

	e.Sim.SetHoldNew(true)
	reply := e.Submit("prompt", map[string]string{"prompt": "a cat on a mat"})
	if reply.Status != upstream.StatusQueued {
		t.Fatalf("reply status %q, want queued", reply.Status)
	}
	id := reply.JobID
	// The record exists by the time the reply came.
	rec := e.Record(id)
	if rec.State != jobs.StatePending || rec.Origin != jobs.OriginSubmit || rec.Modality != "prompt" {
		t.Fatalf("record after submit: %+v", rec)
	}
	if got := rec.Deadline.Sub(rec.SubmittedAt); got != 5*time.Minute {
		t.Fatalf("deadline %v after submission, want 5m", got)
	}
	sj, _ := e.Sim.Job(id)
	if want := e.HookURL + "/webhook/prompt?token=" + testworld.Token; sj.WebhookURL != want {
		t.Fatalf("webhook_url %q, want %q", sj.WebhookURL, want)
	}

	if err := e.Sim.CompleteJob(id, simulator.Outcome{Prohibited: true, Reason: "unsafe"}); err != nil {
		t.Fatal(err)
	}
	e.WaitResults(contract.Default.SubjectResults+">", 1, 15*time.Second)
	e.WaitSettled(10 * time.Second)
	msgs := e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">")
	if len(msgs) != 1 {
		t.Fatalf("%d results, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Subject != contract.Default.ResultSubject("prompt") {
		t.Fatalf("subject %s, want results.prompt", m.Subject)
	}
	if got := m.Header.Get(contract.HeaderBridgeSource); got != contract.SourceWebhook {
		t.Fatalf("Bridge-Source %q", got)
	}
	if got := m.Header.Get(jetstream.MsgIDHeader); got != id {
		t.Fatalf("Nats-Msg-Id %q, want %s", got, id)
	}

	truth, err := e.API.GetJob(natstest.CtxWithin(t, 5*time.Second), id, upstream.ClassPoll)
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
	if bridge["source"] != contract.SourceWebhook || bridge["received_at"] == nil || bridge["verified_at"] == nil {
		t.Fatalf("bridge block %v", bridge)
	}

	rec = e.WaitState(id, jobs.StateDelivered, 5*time.Second)
	if rec.ResultSeq != m.Sequence || rec.Source != contract.SourceWebhook || rec.Attempts != 1 ||
		rec.WebhookReceivedAt == nil || rec.LastStatus != upstream.StatusCompleted {
		t.Fatalf("record after delivery: %+v", rec)
	}
	if n := testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_verify_outcomes_total", Label: "outcome", Value: "published"}); n != 1 {
		t.Fatalf("published outcomes %v, want 1", n)
	}
}

func TestUpstreamFaultsStillOneResultPerJob(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) {
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
				modality := contract.Modalities()[i%3].Name // prompt, image, video
				field := submit.DefaultModalities()[modality]
				value := "text " + strconv.Itoa(i)
				if modality != "prompt" {
					value = fmt.Sprintf("https://cdn.example.com/%d.bin", i)
				}
				wg.Go(func() { ids[i] = e.Submit(modality, map[string]string{field: value}).JobID })
			}
			wg.Wait()
			for _, id := range ids {
				e.WaitState(id, jobs.StateDelivered, 60*time.Second)
			}
			e.WaitSettled(30 * time.Second)
			counts := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))
			if len(counts) != n {
				t.Fatalf("results for %d jobs, want %d", len(counts), n)
			}
			for _, id := range ids {
				if counts[id] != 1 {
					t.Fatalf("job %s has %d results, want 1", id, counts[id])
				}
			}
			if got := e.StreamMsgs(contract.Default.StreamDeadLetter, ""); len(got) != 0 {
				t.Fatalf("%d dead letters, want 0", len(got))
			}
			if retries := testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_verify_outcomes_total", Label: "outcome", Value: "retry"}); retries == 0 {
				t.Fatalf("no retries counted; were faults injected?")
			}
		})
	}
}

func TestNotTerminalRetriesThenExhaustsToReconciler(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	e.startSubmitter()
	e.Sim.SetHoldNew(true)
	id := e.Submit("video", map[string]string{"video_url": "https://cdn.example.com/v.mp4"}).JobID
	e.WaitSimStatus(id, upstream.StatusProcessing)
	e.startVerifier(func(c *verify.Config) {
		c.MaxAttempts = 3
		c.RetryBase = 10 * time.Millisecond
		c.RetryMax = 50 * time.Millisecond
	})
	// A forged "completed" webhook for a job still processing.
	e.PublishWebhook("video", id, testworld.WebhookBody(id, true))
	e.WaitSettled(10 * time.Second)
	if got := e.StreamMsgs(contract.Default.StreamResults, ""); len(got) != 0 {
		t.Fatalf("%d results for an unfinished job, want 0", len(got))
	}
	dl := e.StreamMsgs(contract.Default.StreamDeadLetter, contract.Default.DeadLetterSubject(verify.ReasonAttemptsExhausted))
	if len(dl) != 1 || dl[0].Header.Get(contract.HeaderAttempts) != "3" {
		t.Fatalf("dead letters %v, want one attempts_exhausted after 3 attempts", dl)
	}
	rec := e.Record(id)
	if rec.State != jobs.StatePending || rec.Attempts != 3 || rec.LastStatus != upstream.StatusProcessing {
		t.Fatalf("record %+v: want pending (for the reconciler) with 3 attempts", rec)
	}
	if n := e.Sim.CallCount(simulator.EndpointJob); n != 3 {
		t.Fatalf("%d GETs, want 3", n)
	}
}

// TestUnknownJobsDeliveredUnderForgedFlood floods the verifier with forged webhooks carrying random job
// ids, interleaved with webhooks of legitimate jobs submitted around the bridge (unknown ids too), while
// jobs submitted through the bridge complete: every legitimate job ends with exactly one result, nothing
// forged is published, every forged webhook ends as a not_found dead letter after exactly one GET (in the
// main lane or the slow lane), and the upstream calls spent on unknown ids stay within the unknown-job
// budget over the test's window.
func TestUnknownJobsDeliveredUnderForgedFlood(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
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
		id := e.SubmitDirect("prompt", map[string]string{"prompt": "elsewhere " + strconv.Itoa(j)})
		directIDs[id] = true
		directOrder = append(directOrder, id)
	}
	// The flood is stored before the verifier starts, so the main lane meets far more unknown ids at
	// once than its budget has tokens; the legitimate foreign webhooks are spread through it.
	forgedIDs := make(map[string]bool, forged)
	for i := range forged {
		id := uuid.NewString()
		forgedIDs[id] = true
		e.PublishWebhook(contract.Modalities()[i%3].Name, id, testworld.WebhookBody(id, false))
		if k := i / (forged / direct); i%(forged/direct) == 0 && k < direct {
			e.PublishWebhook("prompt", directOrder[k], testworld.WebhookBody(directOrder[k], false))
		}
	}

	// SLOWLANE keeps a webhook only while it waits: watch what moves there as it is published.
	lane, err := e.NC.SubscribeSync("slowlane.>")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.startVerifier(func(c *verify.Config) {
		c.UnknownRPM, c.UnknownLimiter, c.UnknownConcurrency = unknownRPM, e.UnknownBudget(unknownRPM, burst), 4
	})
	bridgeIDs := make(map[string]bool, viaBridge)
	for j := range viaBridge {
		bridgeIDs[e.Submit("prompt", map[string]string{"prompt": "via bridge " + strconv.Itoa(j)}).JobID] = true
	}

	e.WaitResults(contract.Default.SubjectResults+">", direct+viaBridge, 90*time.Second)
	e.WaitSettled(30 * time.Second)
	e.WaitLaneSettled(contract.Default.SubjectUnknownLane, 90*time.Second)
	window := time.Since(start)

	results := e.StreamMsgs(contract.Default.StreamResults, "")
	ids := testworld.ResultIDs(t, results)
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
		if rec := e.Record(id); rec.State != jobs.StateDelivered {
			t.Fatalf("job %s is %s", id, rec.State)
		}
	}
	for id := range directIDs {
		if rec := e.Record(id); rec.Origin != jobs.OriginWebhook {
			t.Fatalf("foreign job %s has origin %q", id, rec.Origin)
		}
	}

	forgedGets, unknownGets := 0, 0
	for _, c := range e.Sim.Calls(simulator.EndpointJob) {
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

	notFound := e.StreamMsgs(contract.Default.StreamDeadLetter, contract.Default.DeadLetterSubject(verify.ReasonNotFound))
	if len(notFound) != forged {
		t.Fatalf("%d not_found dead letters, want one per forged webhook (%d)", len(notFound), forged)
	}
	for _, m := range notFound {
		if id, _ := jobIDOf(m.Data); !forgedIDs[id] {
			t.Fatalf("not_found dead letter for %q, which is not forged", id)
		}
		if orig := m.Header.Get(contract.HeaderOriginalSubject); !strings.HasPrefix(orig, contract.Default.SubjectWebhooks) {
			t.Fatalf("not_found dead letter has original subject %q, want the webhook's", orig)
		}
	}
	if n := len(e.StreamMsgs(contract.Default.StreamDeadLetter, contract.Default.DeadLetterSubject(verify.ReasonAttemptsExhausted))); n != 0 {
		t.Fatalf("%d attempts_exhausted dead letters, want 0", n)
	}

	if n := len(e.StreamMsgs(contract.Default.StreamSlowLane, "")); n != 0 {
		t.Fatalf("%d webhooks left in SLOWLANE after the lane settled, want 0", n)
	}
	var laned []*nats.Msg
	natstest.WaitFor(t, 10*time.Second, func() error {
		for m, err := lane.NextMsg(10 * time.Millisecond); err == nil; m, err = lane.NextMsg(10 * time.Millisecond) {
			laned = append(laned, m)
		}
		if got := testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_verify_outcomes_total", Label: "outcome", Value: "unknown_laned"}); int(got) != len(laned) {
			return fmt.Errorf("unknown_laned outcomes %v, want %d (one per slow-lane message)", got, len(laned))
		}
		return nil
	})
	if len(laned) == 0 {
		t.Fatal("nothing moved to the slow lane although the flood far exceeded the unknown-job burst")
	}
	if got := testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_deadletter_total", Label: "reason", Value: verify.ReasonUnknownJob}); got != 0 {
		t.Fatalf("bridge_deadletter_total{reason=unknown_job} = %v, want 0: the slow lane is not a dead end", got)
	}
	lanedDirect := 0
	for _, m := range laned {
		id, _ := jobIDOf(m.Data)
		if directIDs[id] {
			lanedDirect++
		}
		if m.Subject != "slowlane.unknown_job" || !strings.HasPrefix(m.Header.Get(jetstream.MsgIDHeader), id+".unknown_job.WEBHOOKS.") || m.Header.Get(contract.HeaderReason) != "" ||
			!strings.HasPrefix(m.Header.Get(contract.HeaderOriginalSubject), contract.Default.SubjectWebhooks) ||
			m.Header.Get(contract.HeaderReceivedAt) == "" || m.Header.Get(contract.HeaderRemoteAddr) == "" || m.Header.Get(contract.HeaderAttempts) == "" {
			t.Fatalf("slow-lane message headers %v", m.Header)
		}
	}
	t.Logf("%d unknown ids (%d forged) cost %d upstream GETs over %v (bound %d); %d went through the slow lane, %d of them legitimate",
		forged+direct, forged, unknownGets, window, bound, len(laned), lanedDirect)
}

func TestJobStatus(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	e.startSubmitter()
	e.startVerifier()
	e.Sim.SetHoldNew(true)
	id := e.Submit("image", map[string]string{"image_url": "https://cdn.example.com/cat.png"}).JobID

	status := func(body string) (submit.StatusReply, string) {
		t.Helper()
		m := e.Request(contract.Default.SubjectJobStatus, []byte(body), nil)
		if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
			return submit.StatusReply{}, code
		}
		var r submit.StatusReply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("status reply %q: %v", m.Data, err)
		}
		if !strings.Contains(string(m.Data), `"result":`) {
			t.Fatalf("status reply has no result key: %s", m.Data)
		}
		return r, ""
	}
	r, code := status(`{"job_id":"` + id + `"}`)
	if code != "" || r.Job.JobID != id || r.Job.State != jobs.StatePending || r.Result != nil && string(r.Result) != "null" {
		t.Fatalf("pending status: code %q, %+v", code, r)
	}

	if err := e.Sim.CompleteJob(id, simulator.Outcome{}); err != nil {
		t.Fatal(err)
	}
	e.WaitState(id, jobs.StateDelivered, 15*time.Second)
	r, code = status(`{"job_id":"` + id + `"}`)
	if code != "" || r.Job.State != jobs.StateDelivered {
		t.Fatalf("delivered status: code %q, %+v", code, r)
	}
	var res map[string]any
	if err := json.Unmarshal(r.Result, &res); err != nil || res["job_id"] != id || res["status"] != upstream.StatusCompleted ||
		res["bridge"] == nil {
		t.Fatalf("result %s", r.Result)
	}
	msgs := e.StreamMsgs(contract.Default.StreamResults, contract.Default.ResultSubject("image"))
	if len(msgs) != 1 || string(msgs[0].Data) != string(r.Result) {
		t.Fatalf("status result differs from RESULTS")
	}

	if _, code := status(`{"job_id":"` + uuid.NewString() + `"}`); code != "404" {
		t.Fatalf("unknown job: code %q, want 404", code)
	}
	for _, bad := range []string{`nope`, `{"job_id": "not-a-uuid"}`, `{"job_id": "a.b.*"}`, `{}`} {
		if _, code := status(bad); code != "400" {
			t.Fatalf("bad request %s: code %q, want 400", bad, code)
		}
	}
}

// TestJobStatusAndReplayOfACompactedJob: once a delivered job is compacted into the history, jobs.status
// answers with its history entry (job null, when and at which RESULTS sequence its result went out) and
// the result while retained; a retried submission with the job's idempotency key gets the same reply
// and writes no JOBS record again (a pending one would be verified and timed out anew).
func TestJobStatusAndReplayOfACompactedJob(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	e.startSubmitter(func(c *submit.Config) { c.History = e.History })
	e.startVerifier()
	hdr := map[string]string{contract.HeaderIdempotencyKey: "order-17"}
	first := e.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"hello"}`), hdr)
	var sub testworld.SubmitReply
	if err := json.Unmarshal(first.Data, &sub); err != nil || sub.JobID == "" {
		t.Fatalf("submit: %s %v", first.Data, err)
	}
	e.WaitState(sub.JobID, jobs.StateDelivered, 15*time.Second)
	rec := e.Record(sub.JobID)
	e.Compact(sub.JobID)

	m := e.Request(contract.Default.SubjectJobStatus, []byte(`{"job_id":"`+sub.JobID+`"}`), nil)
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("status of a compacted job: error %s %s", code, m.Header.Get(micro.ErrorHeader))
	}
	if !strings.HasPrefix(string(m.Data), `{"job":null,"history":{"job_id":"`+sub.JobID+`","delivered_at":"`) {
		t.Fatalf("status of a compacted job: %s", m.Data)
	}
	var r submit.StatusReply
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Job != nil || r.History == nil ||
		r.History.ResultSeq != rec.ResultSeq || !r.History.DeliveredAt.Equal(rec.DeliveredAt.Truncate(time.Millisecond)) {
		t.Fatalf("status of a compacted job: %s (record had result_seq %d, delivered_at %v)", m.Data, rec.ResultSeq, rec.DeliveredAt)
	}
	msgs := e.StreamMsgs(contract.Default.StreamResults, contract.Default.ResultSubject("prompt"))
	if len(msgs) != 1 || msgs[0].Sequence != rec.ResultSeq || string(msgs[0].Data) != string(r.Result) {
		t.Fatalf("status result of a compacted job differs from RESULTS: %s", r.Result)
	}

	again := e.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"hello"}`), hdr)
	if string(again.Data) != string(first.Data) {
		t.Fatalf("retried submission: %s, want the first reply %s", again.Data, first.Data)
	}
	if _, _, err := e.Store.Get(natstest.CtxWithin(t, 5*time.Second), sub.JobID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("record after the retried submission of a compacted job: %v, want none", err)
	}
}

// TestRealAndForgedIDsMixed is issue 11's mix, ten times faster: 200 jobs submitted straight to the
// upstream and 400 forged UUIDs, all 600 webhooks posted without a token, an unknown-job budget of
// 300/min. Every real job has exactly one result (found in the account's list, then verified at the full
// budget), no forged id has one, and the forged ids' GETs and the list pages together stay within the
// unknown-job budget.
func TestRealAndForgedIDsMixed(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 17, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	const (
		realN, forgedN = 200, 400
		unknownRPM     = 300
		burst          = unknownRPM / 12
	)
	var real []string
	for i := range realN {
		real = append(real, e.SubmitDirect("prompt", map[string]string{"prompt": "elsewhere " + strconv.Itoa(i)}))
	}
	forged := map[string]bool{}
	e.startVerifier(func(c *verify.Config) {
		c.UnknownRPM, c.UnknownLimiter = unknownRPM, e.UnknownBudget(unknownRPM, burst)
	})
	pages0 := e.Sim.CallCount(simulator.EndpointJobs)
	start := time.Now()
	for i := range forgedN {
		id := uuid.NewString()
		forged[id] = true
		e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
		if i%2 == 1 {
			r := real[i/2]
			e.PublishWebhook("prompt", r, testworld.WebhookBody(r, false))
		}
	}
	e.WaitResults(contract.Default.SubjectResults+">", realN, 60*time.Second)
	elapsed := time.Since(start)
	ids := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))
	for _, id := range real {
		if ids[id] != 1 {
			t.Fatalf("real job %s has %d results, want 1", id, ids[id])
		}
	}
	forgedGets := 0
	for _, c := range e.Sim.Calls(simulator.EndpointJob) {
		if forged[c.Path[strings.LastIndexByte(c.Path, '/')+1:]] {
			forgedGets++
		}
	}
	for id := range ids {
		if forged[id] {
			t.Fatalf("forged id %s has a result", id)
		}
	}
	pages := e.Sim.CallCount(simulator.EndpointJobs) - pages0
	allowance := burst + int(math.Ceil(time.Since(start).Seconds()*unknownRPM/60))
	t.Logf("figures: %d real results in %v (%.0f/min); %d list pages, %d forged GETs (%.2f calls per forged id so far) against an allowance of %d",
		realN, elapsed.Round(time.Millisecond), float64(realN)/elapsed.Minutes(), pages, forgedGets,
		float64(forgedGets+pages)/forgedN, allowance)
	if forgedGets+pages > allowance {
		t.Fatalf("%d forged GETs and %d list pages; the unknown-job budget allows %d", forgedGets, pages, allowance)
	}
}

// TestElsewhereJobsThroughUpstreamFaults is issue 11's black-box run: webhooks of jobs submitted elsewhere
// while 40% of GET /job calls answer 500, 503 or 429. The verifier's backoff is bounded (RetryMax) and
// each confirmed job gets a record, so with an ample budget every job has its result within 60 s.
func TestElsewhereJobsThroughUpstreamFaults(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{Seed: 23, QueueDelay: time.Millisecond, ProcessDelay: time.Millisecond})
	var ids []string
	for i := range 50 {
		ids = append(ids, e.SubmitDirect("prompt", map[string]string{"prompt": "faulty " + strconv.Itoa(i)}))
	}
	// Default retry settings of the verifier, as production has them.
	e.startVerifier(func(c *verify.Config) { c.RetryBase, c.RetryMax = 0, 0 })
	e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{ErrorRate: 0.25, ErrorStatus: 503, RateLimitRate: 0.15})
	start := time.Now()
	for _, id := range ids {
		e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	}
	e.WaitResults(contract.Default.SubjectResults+">", len(ids), 60*time.Second)
	got := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))
	for _, id := range ids {
		if got[id] != 1 {
			t.Fatalf("job %s: %d results, want 1", id, got[id])
		}
		if rec := e.Record(id); rec.State != jobs.StateDelivered {
			t.Fatalf("job %s: record %s", id, rec.State)
		}
	}
	t.Logf("%d jobs submitted elsewhere, 40%% of GET /job failing: all results in %v", len(ids), time.Since(start).Round(time.Millisecond))
}
