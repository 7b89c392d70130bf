package bridge

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestReverifiedCompactedJobPublishesNothing runs the App's verify role, as the binary wires it, on a
// world's server: a job delivered and then compacted into the history, whose webhook comes back as a
// `bridge replay -reverify` copy (a Nats-Msg-Id of its own, so the stream keeps it inside the duplicate
// window), costs no upstream call and gets no second result: the App hands the history to its Deliverer.
func TestReverifiedCompactedJobPublishesNothing(t *testing.T) {
	e := testworld.New(t, testworld.WithSimulator(simulator.Config{}))
	cfg := testConfig(t)
	cfg.NATSURL, cfg.APIURL, cfg.Roles = e.Node.ClientURL(), e.Sim.URL(), []string{RoleVerify}
	startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)))
	id := e.SubmitDirect("prompt", map[string]string{"prompt": "hello"})
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	e.WaitState(id, jobs.StateDelivered, 20*time.Second)
	e.WaitSettled(20 * time.Second)
	e.Compact(id)

	gets := e.Sim.CallCount(simulator.EndpointJob)
	e.PublishWebhook("prompt", id+".reverify.t", testworld.WebhookBody(id, false))
	e.WaitSettled(20 * time.Second)
	if n := e.Sim.CallCount(simulator.EndpointJob) - gets; n != 0 {
		t.Fatalf("%d upstream GETs for the re-verified webhook of a compacted job, want 0", n)
	}
	if n := testworld.ResultIDs(t, e.StreamMsgs(contract.StreamResults, contract.SubjectResults+">"))[id]; n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	if n := len(e.StreamMsgs(contract.StreamDeadLetter, "")); n != 0 {
		t.Fatalf("%d dead letters, want 0", n)
	}
}
