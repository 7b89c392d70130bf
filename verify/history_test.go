package verify

import (
	"testing"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestWebhookOfCompactedJobIsADuplicate: a job delivered and then compacted into the history (no JOBS
// record, no fence) gets its webhook again after the duplicate window, as a late upstream retry or a
// `bridge replay` would post it: acked as already delivered, with no upstream call, no second result,
// no dead letter and nothing in the slow lane.
func TestWebhookOfCompactedJobIsADuplicate(t *testing.T) {
	const window = time.Second
	e := &env{testworld.New(t, testworld.WithSimulator(simulator.Config{}),
		testworld.WithProvision(natsx.ProvisionConfig{DuplicateWindow: window}))}
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "hello"})
	e.startVerifier()
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	e.WaitState(id, jobs.StateDelivered, 20*time.Second)
	published := time.Now()
	e.WaitSettled(20 * time.Second)
	e.Compact(id)
	<-time.After(time.Until(published.Add(window + 500*time.Millisecond))) // the stream forgets the Nats-Msg-Id

	gets := e.Sim.CallCount(simulator.EndpointJob)
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	e.PublishWebhook("prompt", id+".copy", testworld.WebhookBody(id, true))
	e.WaitSettled(20 * time.Second)
	if n := e.Sim.CallCount(simulator.EndpointJob) - gets; n != 0 {
		t.Fatalf("%d upstream GETs for webhooks of a compacted job, want 0", n)
	}
	if n := testworld.ResultIDs(t, e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">"))[id]; n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	if n := len(e.StreamMsgs(contract.Default.StreamDeadLetter, "")); n != 0 {
		t.Fatalf("%d dead letters, want 0", n)
	}
	if n := len(e.StreamMsgs(contract.Default.StreamSlowLane, "")); n != 0 {
		t.Fatalf("%d webhooks in the slow lane, want 0", n)
	}
	if got := testworld.CounterValue(t, e.Reg, testworld.Series{Name: "bridge_verify_outcomes_total",
		Label: "outcome", Value: "already_delivered"}); got != 2 {
		t.Fatalf("already_delivered webhooks %v, want 2", got)
	}
}
