package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestMissedWebhookWithinTwoPollsPlusGrace pins DESIGN's bound (issue 12: "the webhook grace multiplied
// by 20" made no test fail): a job whose webhook is lost is published within two poll intervals plus
// the grace of leaving the in-flight list, measured from the upstream's completion to the result.
func TestMissedWebhookWithinTwoPollsPlusGrace(t *testing.T) {
	const poll, grace = 500 * time.Millisecond, 300 * time.Millisecond
	e := newEnv(t, simulator.Config{DropRate: 1})
	rp := e.start("r1", func(c *Config) { c.PollInterval, c.WebhookGrace = poll, grace })
	var ids []string
	for i := range 4 {
		ids = append(ids, e.submit(fmt.Sprintf("held %d sim:hold", i), time.Minute))
	}
	waitLeader(t, 5*time.Second, rp)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if rp.sweeps() < 1 {
			return errors.New("no sweep yet")
		}
		return nil
	})
	// Complete them at different points of the sweep cycle.
	for i, id := range ids {
		if err := e.Sim.CompleteJob(id, simulator.Outcome{}); err != nil {
			t.Fatal(err)
		}
		e.waitResults(10*time.Second, 1, id)
		info, _ := e.Sim.Job(id)
		r := e.resultsOf(id)[0]
		took := r.Stored.Sub(info.CompletedAt)
		t.Logf("job %d: published %v after it completed", i, took)
		if r.Source != contract.SourcePoll || took < 0 || took > 2*poll+grace {
			t.Errorf("job %d: %s result %v after completion, want by poll within 2×%v + %v", i, r.Source, took, poll, grace)
		}
	}
}

// TestTimeoutResultShape pins the whole timeout result (issue 12: a timeout without is_prohibited null
// and completed_at null, or a synthesized body without type and categories.custom, made no test fail):
// with the upstream's last answer, and synthesized when the upstream never knew the job.
func TestTimeoutResultShape(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	rp := e.start("r1", nil)
	waitLeader(t, 5*time.Second, rp)

	t.Run("last answer", func(t *testing.T) {
		start := time.Now()
		id := e.submit("stuck sim:hold", 1500*time.Millisecond)
		info, _ := e.Sim.Job(id)
		msg := e.waitRawResult(t, id)
		want := fmt.Sprintf(`{"job_id":%q,"type":"prompt","status":"failed","is_prohibited":null,`+
			`"categories":{"custom":{}},"error_code":"BRIDGE_TIMEOUT","created_at":%q,"completed_at":null,`+
			`"bridge":{"schema_version":1,"source":"timeout","verified_at":null}}`, id, info.CreatedAt.UTC().Format("2006-01-02T15:04:05.000Z"))
		checkTimeoutMsg(t, msg, "results.prompt", id, want, start)
	})
	t.Run("synthesized", func(t *testing.T) {
		start := time.Now()
		id := "00000000-0000-4000-8000-0000000000aa"
		submitted := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		if _, err := e.Store.Create(e.ctx, jobs.Record{JobID: id, Modality: "image", State: jobs.StatePending,
			Origin: jobs.OriginSubmit, SubmittedAt: submitted, Deadline: time.Now().Add(time.Second).UTC()}); err != nil {
			t.Fatal(err)
		}
		msg := e.waitRawResult(t, id)
		want := fmt.Sprintf(`{"job_id":%q,"type":"image","status":"failed","is_prohibited":null,`+
			`"categories":{"custom":{}},"error_code":"BRIDGE_TIMEOUT","created_at":"2026-01-02T03:04:05Z","completed_at":null,`+
			`"bridge":{"schema_version":1,"source":"timeout","verified_at":null}}`, id)
		checkTimeoutMsg(t, msg, "results.image", id, want, start)
	})
}

// waitRawResult waits for the one RESULTS message of id and returns it.
func (e *env) waitRawResult(t *testing.T, id string) *jetstream.RawStreamMsg {
	t.Helper()
	e.waitResults(10*time.Second, 1, id)
	got := e.resultsOf(id)
	if len(got) != 1 {
		t.Fatalf("%d results, want 1", len(got))
	}
	s, err := e.JS.Stream(e.ctx, contract.Default.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(e.ctx, got[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkTimeoutMsg compares a timeout result with want, a JSON body whose bridge block lacks the
// received_at it checks separately (published after start).
func checkTimeoutMsg(t *testing.T, m *jetstream.RawStreamMsg, subject, id, want string, start time.Time) {
	t.Helper()
	if m.Subject != subject {
		t.Errorf("subject %q, want %q", m.Subject, subject)
	}
	if h := m.Header.Get(contract.HeaderBridgeSource); h != "timeout" {
		t.Errorf("header %s %q, want timeout", contract.HeaderBridgeSource, h)
	}
	if h := m.Header.Get(nats.MsgIdHdr); h != id {
		t.Errorf("header %s %q, want %q", nats.MsgIdHdr, h, id)
	}
	var got map[string]any
	if err := json.Unmarshal(m.Data, &got); err != nil {
		t.Fatalf("body %s: %v", m.Data, err)
	}
	bridge, _ := got["bridge"].(map[string]any)
	received, _ := bridge["received_at"].(string)
	at, err := time.Parse(time.RFC3339Nano, received)
	if err != nil || at.Before(start.Add(-time.Second)) || at.After(time.Now()) {
		t.Errorf("bridge.received_at %q: want the time of the timeout", received)
	}
	delete(bridge, "received_at")
	var exp map[string]any
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(exp)
	if string(gb) != string(wb) {
		t.Errorf("timeout result\n got %s\nwant %s", gb, wb)
	}
}
