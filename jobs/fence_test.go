package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// TestResultOnceAfterWindowWhenRecordWriteLost pins issue 12 finding 1: a process publishes a result and
// crashes (or pauses) before it writes delivered to JOBS; the job comes back after the duplicate window.
// The record still says pending, but the fence says the result is out: nothing is published again and
// the record is finished from the stream.
func TestResultOnceAfterWindowWhenRecordWriteLost(t *testing.T) {
	w := fenceWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := w.overdueJob(t, ctx, "prompt")
	out, err := w.Deliverer.Deliver(ctx, job, contract.SourceWebhook, time.Now())
	if err != nil || out != jobs.Published {
		t.Fatalf("first delivery: %v %v", out, err)
	}
	first, _, _ := w.Store.Get(ctx, job.JobID)
	published := time.Now()
	// The record write after the publish was lost.
	if _, err := w.Store.Update(ctx, job.JobID, func(r *jobs.Record) (bool, error) {
		r.State, r.ResultSeq, r.Source, r.DeliveredAt = jobs.StatePending, 0, "", nil
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	outliveWindow(published)
	out, err = w.Deliverer.Deliver(ctx, job, contract.SourcePoll, time.Now())
	if err != nil || out != jobs.AlreadyDelivered {
		t.Fatalf("delivery after the window: %v %v, want already_delivered", out, err)
	}
	if n := len(w.msgsByID(t, job.JobID)); n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	rec, _, _ := w.Store.Get(ctx, job.JobID)
	if rec.State != jobs.StateDelivered || rec.Source != contract.SourceWebhook || rec.ResultSeq != first.ResultSeq {
		t.Fatalf("record %s source %s seq %d, want delivered by webhook at seq %d", rec.State, rec.Source, rec.ResultSeq, first.ResultSeq)
	}
	// Nor does the deadline publish a timeout result for it.
	if out, err := w.Deliverer.TimeOut(ctx, job.JobID, nil); err != nil || out != jobs.AlreadyDelivered {
		t.Fatalf("timeout after delivery: %v %v", out, err)
	}
}

// TestResultOnceAfterRecordExpired pins issue 12 finding 2: a delivered job's record is gone (it used to
// expire after 30 days); a duplicate webhook or a re-verify after the window creates a fresh pending
// record, and still nothing is published again.
func TestResultOnceAfterRecordExpired(t *testing.T) {
	w := fenceWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := w.overdueJob(t, ctx, "image")
	if out, err := w.Deliverer.Deliver(ctx, job, contract.SourceWebhook, time.Now()); err != nil || out != jobs.Published {
		t.Fatalf("first delivery: %v %v", out, err)
	}
	published := time.Now()
	if err := w.Store.KV().Delete(ctx, job.JobID); err != nil {
		t.Fatal(err)
	}
	outliveWindow(published)
	if out, err := w.Deliverer.Deliver(ctx, job, contract.SourceWebhook, time.Now()); err != nil || out != jobs.AlreadyDelivered {
		t.Fatalf("delivery of an expired job: %v %v, want already_delivered", out, err)
	}
	if n := len(w.msgsByID(t, job.JobID)); n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
}

// TestPausedPublisherResumingAfterWindowPublishesNothing pins the fence against the case a record
// cannot: a deliverer paused after it decided to publish and before its publish, for longer than the
// duplicate window, while another delivers the job. When it resumes, its publish is refused by the
// stream itself: the job keeps one result.
func TestPausedPublisherResumingAfterWindowPublishesNothing(t *testing.T) {
	w := fenceWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := w.overdueJob(t, ctx, "video")
	r := w.pausedRace(t, jobs.DelivererConfig{JS: w.JS, Store: w.Store}, job, nil)
	if r.err != nil || r.out != jobs.AlreadyDelivered {
		t.Fatalf("resumed deliverer: %v %v, want already_delivered", r.out, r.err)
	}
	if n := len(w.msgsByID(t, job.JobID)); n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	rec, _, _ := w.Store.Get(ctx, job.JobID)
	if rec.Source != contract.SourcePoll {
		t.Fatalf("record source %s, want poll (the one in the stream)", rec.Source)
	}
}

// TestDeliveredRecordIsATombstone: the record of a job whose result is out keeps what the result was and
// where, not the upstream's last answer; its size is what DESIGN.md's cost per million jobs is from.
func TestDeliveredRecordIsATombstone(t *testing.T) {
	w := fenceWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := w.overdueJob(t, ctx, "prompt")
	if _, err := w.Store.Update(ctx, job.JobID, func(r *jobs.Record) (bool, error) {
		r.LastJob, r.LastError = job.Raw, "a passing 503"
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Deliverer.Deliver(ctx, job, contract.SourceWebhook, time.Now()); err != nil {
		t.Fatal(err)
	}
	e, err := w.Store.KV().Get(ctx, job.JobID)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := jobs.Decode(e.Value())
	if len(rec.LastJob) != 0 || rec.LastError != "" || rec.ResultSeq == 0 || rec.State != jobs.StateDelivered {
		t.Fatalf("tombstone %s", e.Value())
	}
	t.Logf("tombstone of %d bytes: %s", len(e.Value()), e.Value())
	if len(e.Value()) > 400 {
		t.Fatalf("tombstone of %d bytes; DESIGN.md counts on under 400", len(e.Value()))
	}
}

// TestResultWithoutDoneFoundAfterWindow: a process claimed a job's fence and stored its result, then
// stopped before the fence's done message and the JOBS write (as a crash would leave it). After the
// duplicate window another delivery takes the claim over, finds that result in the stream and records
// it: no second result, and the record names the stored one's sequence and source.
func TestResultWithoutDoneFoundAfterWindow(t *testing.T) {
	w := fenceWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := w.overdueJob(t, ctx, "prompt")
	fence := contract.Default.ResultFenceSubject(job.JobID, false)
	claim := nats.NewMsg(fence)
	claim.Header.Set(contract.HeaderFence, contract.FenceClaim)
	claim.Header.Set(contract.HeaderBridgeSource, contract.SourceWebhook)
	c, err := w.JS.PublishMsg(ctx, claim, jetstream.WithExpectLastSequencePerSubject(0))
	if err != nil {
		t.Fatal(err)
	}
	res := nats.NewMsg(contract.Default.ResultSubject("prompt"))
	res.Data = job.Raw
	res.Header.Set(jetstream.MsgIDHeader, job.JobID)
	res.Header.Set(contract.HeaderBridgeSource, contract.SourceWebhook)
	r, err := w.JS.PublishMsg(ctx, res, jetstream.WithExpectLastSequenceForSubject(c.Sequence, fence))
	if err != nil {
		t.Fatal(err)
	}
	outliveWindow(time.Now())

	if out, err := w.Deliverer.Deliver(ctx, job, contract.SourcePoll, time.Now()); err != nil || out != jobs.AlreadyDelivered {
		t.Fatalf("delivery after the window: %v %v, want already_delivered", out, err)
	}
	if n := len(w.msgsByID(t, job.JobID)); n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	rec, _, _ := w.Store.Get(ctx, job.JobID)
	if rec.State != jobs.StateDelivered || rec.ResultSeq != r.Sequence || rec.Source != contract.SourceWebhook {
		t.Fatalf("record %s seq %d source %s, want delivered at seq %d by webhook", rec.State, rec.ResultSeq, rec.Source, r.Sequence)
	}
}

// delivered is what a Deliver call returned.
type delivered struct {
	out jobs.Outcome
	err error
}

// pausedRace starts a delivery of job (by webhook) through a deliverer of cfg that pauses just before
// its publish; meanwhile w's own deliverer delivers the job by poll, the duplicate window passes and
// between runs (a compaction, say; nil: nothing). It then resumes the paused delivery and returns what
// that got.
func (w world) pausedRace(t *testing.T, cfg jobs.DelivererConfig, job upstream.Job, between func()) delivered {
	t.Helper()
	ctx := natstest.CtxWithin(t, 30*time.Second)
	sleeper, err := jobs.NewDeliverer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	paused, resume := make(chan struct{}), make(chan struct{})
	sleeper.SetBeforePublish(func(string) { close(paused); <-resume })
	done := make(chan delivered, 1)
	go func() {
		out, err := sleeper.Deliver(ctx, job, contract.SourceWebhook, time.Now())
		done <- delivered{out, err}
	}()
	natstest.RecvWithin(t, paused, 10*time.Second)
	if out, err := w.Deliverer.Deliver(ctx, job, contract.SourcePoll, time.Now()); err != nil || out != jobs.Published {
		t.Fatalf("delivery while the other is paused: %v %v", out, err)
	}
	outliveWindow(time.Now())
	if between != nil {
		between()
	}
	close(resume)
	return natstest.RecvWithin(t, done, 10*time.Second)
}
