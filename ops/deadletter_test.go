package ops

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/upstream/simulator"
)

// lastSeq is the last sequence of stream.
func (w *world) lastSeq(stream string) uint64 {
	w.tb.Helper()
	s, err := w.js.Stream(natstest.CtxWithin(w.tb, 5*time.Second), stream)
	if err != nil {
		w.tb.Fatal(err)
	}
	info, err := s.Info(natstest.CtxWithin(w.tb, 5*time.Second))
	if err != nil {
		w.tb.Fatal(err)
	}
	return info.State.LastSeq
}

// waitDeadLetters waits until DEADLETTER holds want messages of reason.
func (w *world) waitDeadLetters(reason string, want uint64) {
	w.tb.Helper()
	natstest.WaitFor(w.tb, 30*time.Second, func() error {
		sum, err := SummarizeDeadLetters(natstest.CtxWithin(w.tb, 5*time.Second), w.js, contract.Default)
		if err != nil {
			return err
		}
		if sum.ByReason[reason] != want {
			return fmt.Errorf("dead letters %v, want %d %s", sum.ByReason, want, reason)
		}
		return nil
	})
}

// TestRedriveOfNowVerifiableDeadLetterPublishesOnce: a webhook dead-lettered after its attempts ran out
// (upstream down) is redriven once the upstream is back, and its result is published exactly once, however
// often it is redriven.
func TestRedriveOfNowVerifiableDeadLetterPublishesOnce(t *testing.T) {
	w := newWorld(t)
	w.withSimulator(simulator.Config{})
	w.startVerifier(2)

	id := w.submit("image")
	w.waitTerminal(id)
	w.sim.SetFault(simulator.EndpointJob, simulator.Fault{ErrorRate: 1})
	w.webhook("image", id)
	w.waitDeadLetters("attempts_exhausted", 1)
	w.sim.SetFault(simulator.EndpointJob, simulator.Fault{})
	forged := uuid.NewString()
	w.webhook("prompt", forged)
	w.publish(contract.Default.WebhookSubject("prompt"), "junk-1", `{"job_id":"not-a-uuid"}`)
	w.waitDeadLetters("malformed", 1)
	w.waitDeadLetters("not_found", 1)
	w.verifierIdle(w.lastSeq(contract.Default.StreamWebhooks))
	if n := len(w.resultsPerJob()); n != 0 {
		t.Fatalf("%d results before the redrive", n)
	}

	ctx := natstest.CtxWithin(t, 30*time.Second)
	all, err := ListDeadLetters(ctx, w.js, DeadLetterFilter{})
	if err != nil || len(all) != 3 {
		t.Fatalf("list: %v %v", all, err)
	}
	byReason := map[string]DeadLetter{}
	for _, d := range all {
		byReason[d.Reason] = d
	}
	ex := byReason["attempts_exhausted"]
	if ex.JobID != id || ex.Attempts != 2 || ex.OriginalSubject != "webhooks.image" || ex.JobState != "" {
		t.Fatalf("exhausted dead letter: %+v", ex)
	}
	if got, err := ListDeadLetters(ctx, w.js, DeadLetterFilter{Seqs: []uint64{ex.Seq}}); err != nil || len(got) != 1 || got[0].JobID != id {
		t.Fatalf("show %d: %+v %v", ex.Seq, got, err)
	}
	if _, err := ListDeadLetters(ctx, w.js, DeadLetterFilter{Seqs: []uint64{999}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("show 999: %v", err)
	}

	// Dry run decides without publishing.
	items, err := Redrive(ctx, RedriveConfig{JS: w.js, Log: w.log, DryRun: true, Filter: DeadLetterFilter{}})
	if err != nil || len(items) != 3 {
		t.Fatalf("dry run: %+v %v", items, err)
	}
	actions := map[string]string{}
	for _, it := range items {
		actions[it.Reason] = it.Action
	}
	if actions["malformed"] != ActionSkipped || actions["not_found"] != ActionWould || actions["attempts_exhausted"] != ActionWould {
		t.Fatalf("dry run actions %v", actions)
	}
	webhooks := w.lastSeq(contract.Default.StreamWebhooks)

	items, err = Redrive(ctx, RedriveConfig{JS: w.js, Log: w.log, Filter: DeadLetterFilter{Reasons: []string{"attempts_exhausted"}}})
	if err != nil || len(items) != 1 || items[0].Action != ActionRedriven || items[0].MsgID != fmt.Sprintf("%s.redrive.%d", id, ex.Seq) ||
		items[0].Subject != "webhooks.image" {
		t.Fatalf("redrive: %+v %v", items, err)
	}
	w.verifierIdle(webhooks + 1)
	if got := w.resultsPerJob(); got[id] != 1 || len(got) != 1 {
		t.Fatalf("results after redrive: %v", got)
	}

	// Again: the record says delivered, so it is skipped; forced, the duplicate window drops it.
	items, err = Redrive(ctx, RedriveConfig{JS: w.js, Log: w.log, Filter: DeadLetterFilter{JobIDs: []string{id}}})
	if err != nil || len(items) != 1 || items[0].Action != ActionSkipped {
		t.Fatalf("second redrive: %+v %v", items, err)
	}
	items, err = Redrive(ctx, RedriveConfig{JS: w.js, Log: w.log, Force: true, Delete: true, Filter: DeadLetterFilter{Seqs: []uint64{ex.Seq}}})
	if err != nil || len(items) != 1 || items[0].Action != ActionDuplicate || !items[0].Deleted {
		t.Fatalf("forced redrive: %+v %v", items, err)
	}
	if got := w.resultsPerJob(); got[id] != 1 || len(got) != 1 {
		t.Fatalf("results after forced redrive: %v", got)
	}

	// The forged one is redriven (and deleted) and fails verification again; it is never published, and its
	// new failure is dead-lettered anew under the new webhook's sequence.
	items, err = Redrive(ctx, RedriveConfig{JS: w.js, Log: w.log, Delete: true, Filter: DeadLetterFilter{Reasons: []string{"not_found"}}})
	if err != nil || len(items) != 1 || items[0].Action != ActionRedriven || !items[0].Deleted {
		t.Fatalf("redrive forged: %+v %v", items, err)
	}
	w.verifierIdle(w.lastSeq(contract.Default.StreamWebhooks))
	if got := w.resultsPerJob(); got[forged] != 0 || len(got) != 1 {
		t.Fatalf("forged job published: %v", got)
	}
	left, err := ListDeadLetters(ctx, w.js, DeadLetterFilter{})
	if err != nil || len(left) != 2 || left[0].Reason == left[1].Reason || left[0].Reason == "attempts_exhausted" || left[1].Reason == "attempts_exhausted" {
		t.Fatalf("left: %+v %v", left, err)
	}
}

func TestListDeadLettersFilters(t *testing.T) {
	w := newWorld(t)
	ids := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	var seqs []uint64
	for i, reason := range []string{"not_found", "attempts_exhausted", "not_found"} {
		seqs = append(seqs, w.publish(contract.Default.DeadLetterSubject(reason), ids[i]+"."+reason, fmt.Sprintf(`{"job_id":%q}`, ids[i]),
			contract.HeaderReason, reason, contract.HeaderAttempts, "3", contract.HeaderOriginalSubject, "webhooks.prompt"))
	}
	tests := []struct {
		name string
		f    DeadLetterFilter
		want []uint64
	}{
		{"all", DeadLetterFilter{}, seqs},
		{"reason", DeadLetterFilter{Reasons: []string{"not_found"}}, []uint64{seqs[0], seqs[2]}},
		{"job", DeadLetterFilter{JobIDs: []string{ids[1]}}, []uint64{seqs[1]}},
		{"from seq", DeadLetterFilter{FromSeq: seqs[1]}, seqs[1:]},
		{"limit", DeadLetterFilter{Limit: 2}, seqs[:2]},
		{"since future", DeadLetterFilter{Since: time.Now().Add(time.Hour)}, nil},
		{"seqs and reason", DeadLetterFilter{Seqs: []uint64{seqs[1], seqs[2]}, Reasons: []string{"not_found"}}, []uint64{seqs[2]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ListDeadLetters(natstest.CtxWithin(t, 10*time.Second), w.js, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var gs []uint64
			for _, d := range got {
				gs = append(gs, d.Seq)
				if d.Attempts != 3 || d.OriginalSubject != "webhooks.prompt" {
					t.Errorf("dead letter %+v", d)
				}
			}
			equalSeqs(t, gs, tt.want)
		})
	}
	sum, err := SummarizeDeadLetters(natstest.CtxWithin(t, 5*time.Second), w.js, contract.Default)
	if err != nil || sum.Total != 3 || sum.ByReason["not_found"] != 2 || sum.ByReason["attempts_exhausted"] != 1 {
		t.Fatalf("summary %+v %v", sum, err)
	}
}

// TestRedriveKeepsEveryWebhookHeader: a signed webhook keeps what ingest stored with it (its provenance
// Bridge-Authenticated and its Bridge-Delivery-Id among them) through the verifier's dead letter, the
// redrive back into WEBHOOKS, and the dead letter of the redriven copy. Without its provenance a redriven
// webhook of a job the bridge has no record of would count as unproven and wait for the unknown-job budget.
func TestRedriveKeepsEveryWebhookHeader(t *testing.T) {
	w := newWorld(t)
	w.withSimulator(simulator.Config{})
	w.startVerifier(2)
	id := uuid.NewString() // the upstream does not know it: one GET, then dead letter not_found
	want := map[string]string{
		"Bridge-Received-At": "2026-12-01T10:00:00Z", "Bridge-Remote-Addr": "203.0.113.7:4711", "Bridge-Modality": "prompt",
		"Bridge-Authenticated": "signature", "Bridge-Delivery-Id": "wh_" + id,
	}
	var hdr []string
	for k, v := range want {
		hdr = append(hdr, k, v)
	}
	w.publish(contract.Default.WebhookSubject("prompt"), id, fmt.Sprintf(`{"job_id":%q,"status":"completed"}`, id), hdr...)
	w.waitDeadLetters("not_found", 1)
	keeps := func(what string, h nats.Header) {
		t.Helper()
		for k, v := range want {
			if got := h.Get(k); got != v {
				t.Fatalf("%s: %s %q, want %q (headers %v)", what, k, got, v, h)
			}
		}
	}
	keeps("dead letter", w.streamMsgs(contract.Default.StreamDeadLetter)[0].Header)

	ctx := natstest.CtxWithin(t, 30*time.Second)
	items, err := Redrive(ctx, RedriveConfig{JS: w.js, Log: w.log, Filter: DeadLetterFilter{JobIDs: []string{id}}})
	if err != nil || len(items) != 1 || items[0].Action != ActionRedriven {
		t.Fatalf("redrive: %+v %v", items, err)
	}
	webhooks := w.streamMsgs(contract.Default.StreamWebhooks)
	redriven := webhooks[len(webhooks)-1]
	keeps("redriven webhook", redriven.Header)
	if redriven.Header.Get("Bridge-Replay") != "redrive" || redriven.Header.Get("Nats-Msg-Id") != items[0].MsgID {
		t.Fatalf("redriven webhook headers %v", redriven.Header)
	}
	w.waitDeadLetters("not_found", 2)
	keeps("dead letter of the redriven webhook", w.streamMsgs(contract.Default.StreamDeadLetter)[1].Header)
}
