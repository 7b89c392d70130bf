package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
)

// compactWorld is a fence world with the process's JOBS watcher running and a compactor on it (whose
// rounds the test runs itself).
func compactWorld(t *testing.T, opts ...testworld.Option) (world, *jobs.Compactor) {
	t.Helper()
	w := fenceWorld(t, opts...)
	watcher := jobs.NewWatcher(w.Res.Jobs, time.Second, w.Log)
	c, err := jobs.NewCompactor(jobs.CompactorConfig{Watcher: watcher, Jobs: w.Res.JobsStream, Results: w.Res.Results,
		Archive: w.History, Window: fenceWindow, Log: w.Log, Metrics: w.Reg})
	if err != nil {
		t.Fatal(err)
	}
	testworld.Run(t, "jobs watch", watcher.Run)
	return w, c
}

// deliverJobs delivers n new jobs (source webhook) and returns their ids.
func (w world) deliverJobs(t *testing.T, ctx context.Context, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		job := w.overdueJob(t, ctx, "prompt")
		if out, err := w.Deliverer.Deliver(ctx, job, contract.SourceWebhook, time.Now()); err != nil || out != jobs.Published {
			t.Fatalf("delivery: %v %v", out, err)
		}
		ids[i] = job.JobID
	}
	return ids
}

// hotSubjects returns the subjects of JOBS, and the fence subjects of RESULTS.
func (w world) hotSubjects(t *testing.T, ctx context.Context) (keys, fences int) {
	t.Helper()
	ji, err := w.Res.JobsStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ri, err := w.Res.Results.Info(ctx, jetstream.WithSubjectFilter("bridge.result.>"))
	if err != nil {
		t.Fatal(err)
	}
	return int(ji.State.NumSubjects), len(ri.State.Subjects)
}

// wantHot fails unless JOBS has keys subjects and RESULTS fences fence subjects.
func (w world) wantHot(t *testing.T, ctx context.Context, keys, fences int) {
	t.Helper()
	if k, f := w.hotSubjects(t, ctx); k != keys || f != fences {
		t.Fatalf("hot subjects: %d JOBS keys and %d fences, want %d and %d", k, f, keys, fences)
	}
}

// wantInHistory fails unless each of ids is (in) or is not in the history.
func (w world) wantInHistory(t *testing.T, ctx context.Context, in bool, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if got, err := w.History.Delivered(ctx, id); err != nil || got != in {
			t.Fatalf("history lookup %s: %v %v, want %v", id, got, err, in)
		}
	}
}

// waitHeld waits until the compactor holds n delivered jobs from the watch.
func waitHeld(t *testing.T, c *jobs.Compactor, n int) {
	t.Helper()
	natstest.WaitFor(t, 10*time.Second, func() error {
		if got := c.Held(); got != n {
			return fmt.Errorf("compactor holds %d delivered jobs, want %d", got, n)
		}
		return nil
	})
}

func round(t *testing.T, ctx context.Context, c *jobs.Compactor, want int) {
	t.Helper()
	if n, err := c.Round(ctx); err != nil || n != want {
		t.Fatalf("round: compacted %d, %v; want %d, nil", n, err, want)
	}
}

// TestCompactorMovesOldDeliveredJobsToHistory: jobs delivered longer ago than the duplicate window lose
// their JOBS key and fence subjects and are in the history, and a webhook or poll of them publishes
// nothing; pending jobs and jobs delivered within the window keep their hot state.
func TestCompactorMovesOldDeliveredJobsToHistory(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) { testCompactorMovesOldDeliveredJobsToHistory(t, topo) })
	}
}

func testCompactorMovesOldDeliveredJobsToHistory(t *testing.T, topo testworld.Topology) {
	w, c := compactWorld(t, testworld.WithTopology(topo))
	ctx := natstest.CtxWithin(t, 60*time.Second)
	old := w.deliverJobs(t, ctx, 5)
	published := time.Now()
	pending := []string{w.overdueJob(t, ctx, "prompt").JobID, w.overdueJob(t, ctx, "image").JobID}
	waitHeld(t, c, 5)
	records := map[string]jobs.Record{}
	for _, id := range old {
		records[id] = w.Record(id)
	}
	round(t, ctx, c, 0) // all within the window
	w.wantHot(t, ctx, 7, 5)

	outliveWindow(published)
	fresh := w.deliverJobs(t, ctx, 1)
	waitHeld(t, c, 6)
	round(t, ctx, c, 5)
	w.wantHot(t, ctx, 3, 1) // the pending jobs and the fresh one
	w.wantInHistory(t, ctx, true, old...)
	w.wantInHistory(t, ctx, false, append(pending, fresh...)...)
	for id, rec := range records { // the history keeps when and where each result went out
		e, _, err := w.History.Lookup(ctx, id)
		if err != nil || rec.ResultSeq == 0 || e.ResultSeq != rec.ResultSeq || !e.DeliveredAt.Equal(rec.DeliveredAt.Truncate(time.Millisecond)) {
			t.Fatalf("history entry of %s: %+v, %v; want delivered at %v, result seq %d", id, e, err, rec.DeliveredAt, rec.ResultSeq)
		}
	}
	for _, id := range pending {
		if rec := w.Record(id); rec.State != jobs.StatePending {
			t.Fatalf("pending job %s is %s after compaction", id, rec.State)
		}
	}
	if rec := w.Record(fresh[0]); rec.State != jobs.StateDelivered {
		t.Fatalf("fresh job is %s after compaction, want delivered", rec.State)
	}

	for _, id := range old {
		job := w.overdueJob(t, ctx, "prompt") // only for its shape: the same job again under id
		job.JobID = id
		for _, source := range []string{contract.SourceWebhook, contract.SourcePoll} {
			if out, err := w.Deliverer.Deliver(ctx, job, source, time.Now()); err != nil || out != jobs.AlreadyDelivered {
				t.Fatalf("%s delivery of compacted job %s: %v %v, want already_delivered", source, id, out, err)
			}
		}
		if n := len(w.msgsByID(t, id)); n != 1 {
			t.Fatalf("%d results for compacted job %s, want 1", n, id)
		}
		if _, _, err := w.Store.Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
			t.Fatalf("record of compacted job %s: %v, want ErrNotFound", id, err)
		}
	}
	w.wantHot(t, ctx, 8, 1) // 3 as before, and the 5 jobs made for their shape, pending
	round(t, ctx, c, 0)
}

// TestCompactorCrashAfterHistoryLosesNothing: a round stopped after its ids are in the history and before
// any removal leaves every job either hot or in the history; the next round compacts each once.
func TestCompactorCrashAfterHistoryLosesNothing(t *testing.T) {
	w, c := compactWorld(t)
	ctx := natstest.CtxWithin(t, 60*time.Second)
	ids := w.deliverJobs(t, ctx, 4)
	outliveWindow(time.Now())
	waitHeld(t, c, 4)
	crash := errors.New("crash")
	c.SetAfterAdd(func() error { return crash })
	if n, err := c.Round(ctx); !errors.Is(err, crash) || n != 0 {
		t.Fatalf("crashed round: %d, %v; want 0, crash", n, err)
	}
	w.wantInHistory(t, ctx, true, ids...)
	w.wantHot(t, ctx, 4, 4)

	c.SetAfterAdd(nil)
	round(t, ctx, c, 4)
	w.wantHot(t, ctx, 0, 0)
	w.wantInHistory(t, ctx, true, ids...)
	round(t, ctx, c, 0)
	if got := testworld.CounterValue(t, w.Reg, testworld.Series{Name: "bridge_compact_rounds_total", Label: "result", Value: "error"}); got != 1 {
		t.Fatalf("error rounds %v, want 1", got)
	}
	for _, id := range ids {
		if n := len(w.msgsByID(t, id)); n != 1 {
			t.Fatalf("%d results for job %s, want 1", n, id)
		}
	}
}

// TestCompactorKeepsARecordWrittenSinceRead: a record written after the compactor read it (between the
// history add and the removal) is not removed: the purge stops at the revision read.
func TestCompactorKeepsARecordWrittenSinceRead(t *testing.T) {
	w, c := compactWorld(t)
	ctx := natstest.CtxWithin(t, 60*time.Second)
	ids := w.deliverJobs(t, ctx, 1)
	outliveWindow(time.Now())
	waitHeld(t, c, 1)
	c.SetAfterAdd(func() error {
		_, err := w.Store.Update(ctx, ids[0], func(r *jobs.Record) (bool, error) {
			r.LastError = "written after the compactor read the record"
			return true, nil
		})
		return err
	})
	round(t, ctx, c, 1)
	if rec := w.Record(ids[0]); rec.LastError == "" {
		t.Fatalf("record written since read lost its write: %+v", rec)
	}
	w.wantHot(t, ctx, 1, 0)
}

// TestCompactorTakesOldTombstonesInBatches: delivered records of the layout before the compactor (kept
// for days) are compacted when a compactor first runs on them, a bounded batch a round.
func TestCompactorTakesOldTombstonesInBatches(t *testing.T) {
	w := fenceWorld(t)
	ctx := natstest.CtxWithin(t, 60*time.Second)
	watcher := jobs.NewWatcher(w.Res.Jobs, time.Second, w.Log)
	c, err := jobs.NewCompactor(jobs.CompactorConfig{Watcher: watcher, Jobs: w.Res.JobsStream, Results: w.Res.Results,
		Archive: w.History, Window: fenceWindow, Batch: 3, Log: w.Log})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 7 {
		at := time.Now().Add(-48*time.Hour + time.Duration(i)*time.Minute).UTC()
		rec := jobs.Record{JobID: uuid.NewString(), Modality: "prompt", State: jobs.StateDelivered, Origin: jobs.OriginSubmit,
			SubmittedAt: at.Add(-time.Minute), Deadline: at.Add(4 * time.Minute), DeliveredAt: &at, Source: contract.SourceWebhook}
		if _, err := w.Store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.JobID)
	}
	testworld.Run(t, "jobs watch", watcher.Run)
	waitHeld(t, c, 7)
	round(t, ctx, c, 3)
	w.wantInHistory(t, ctx, true, ids[:3]...) // oldest first
	w.wantInHistory(t, ctx, false, ids[3:]...)
	round(t, ctx, c, 3)
	round(t, ctx, c, 1)
	round(t, ctx, c, 0)
	w.wantHot(t, ctx, 0, 0)
	w.wantInHistory(t, ctx, true, ids...)
}

// TestCompactorFailpoints: a round of three jobs reaches CompactAfterHistory once, with its first job,
// when every id is in the history and every job still hot, and CompactAfterRemove after each removal but
// the last, with one more job gone each time.
func TestCompactorFailpoints(t *testing.T) {
	w := fenceWorld(t)
	ctx := natstest.CtxWithin(t, 60*time.Second)
	ids := w.deliverJobs(t, ctx, 3)
	outliveWindow(time.Now())
	var got []string
	watcher := jobs.NewWatcher(w.Res.Jobs, time.Second, w.Log)
	c, err := jobs.NewCompactor(jobs.CompactorConfig{Watcher: watcher, Jobs: w.Res.JobsStream, Results: w.Res.Results,
		Archive: w.History, Window: fenceWindow, Log: w.Log,
		Failpoint: func(p jobs.Failpoint, id string) {
			keys, fences := w.hotSubjects(t, ctx)
			got = append(got, fmt.Sprintf("%s %d/%d", p, keys, fences))
			w.wantInHistory(t, ctx, true, ids...)
			if p == jobs.CompactAfterRemove {
				if _, _, err := w.Store.Get(ctx, id); !errors.Is(err, jobs.ErrNotFound) {
					t.Errorf("%s %s: record %v, want ErrNotFound", p, id, err)
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	testworld.Run(t, "jobs watch", watcher.Run)
	waitHeld(t, c, 3)
	round(t, ctx, c, 3)
	want := []string{"compact-after-history 3/3", "compact-after-remove 2/2", "compact-after-remove 1/1"}
	if !slices.Equal(got, want) {
		t.Fatalf("failpoints reached %q, want %q", got, want)
	}
	w.wantHot(t, ctx, 0, 0)
}

// TestCompactorMovesIdempotencyKeysWithTheirJobs: a job submitted with an Idempotency-Key takes the key
// into the history in the job's add (under the key's history id, with the job's delivery time and RESULTS
// sequence), and the key's entry leaves BRIDGE_IDEMPOTENCY with the record, without a subject left. A
// round stopped after the add leaves the key both in the history and in the bucket; the next removes it.
func TestCompactorMovesIdempotencyKeysWithTheirJobs(t *testing.T) {
	w := fenceWorld(t)
	ctx := natstest.CtxWithin(t, 60*time.Second)
	watcher := jobs.NewWatcher(w.Res.Jobs, time.Second, w.Log)
	c, err := jobs.NewCompactor(jobs.CompactorConfig{Watcher: watcher, Jobs: w.Res.JobsStream, Results: w.Res.Results,
		Idempotency: w.Res.IdempotencyStream, Archive: w.History, Window: fenceWindow, Log: w.Log})
	if err != nil {
		t.Fatal(err)
	}
	job := w.overdueJob(t, ctx, "prompt")
	// As submit leaves a keyed job: the key as sent in the record, the key's entry in the bucket.
	if _, err := w.Store.Update(ctx, job.JobID, func(r *jobs.Record) (bool, error) {
		r.IdempotencyKey = "order-17"
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Res.Idempotency.Put(ctx, "002c6f1d6ec34dc828c6262185ecf060a84200d8463aa9817cefd49529371add",
		[]byte(`{"state":"done","job_id":"`+job.JobID+`","status":"queued"}`)); err != nil {
		t.Fatal(err)
	}
	if out, err := w.Deliverer.Deliver(ctx, job, contract.SourceWebhook, time.Now()); err != nil || out != jobs.Published {
		t.Fatalf("delivery: %v %v", out, err)
	}
	rec := w.Record(job.JobID)
	outliveWindow(time.Now())
	testworld.Run(t, "jobs watch", watcher.Run)
	waitHeld(t, c, 1)

	const keyID = "002c6f1d-6ec3-4dc8-28c6-262185ecf060" // contract.IdempotencyHistoryID("prompt", "order-17")
	crash := errors.New("crash")
	c.SetAfterAdd(func() error { return crash })
	if n, err := c.Round(ctx); !errors.Is(err, crash) || n != 0 {
		t.Fatalf("crashed round: %d, %v; want 0, crash", n, err)
	}
	w.wantInHistory(t, ctx, true, job.JobID, keyID)
	w.wantKeySubjects(t, ctx, 1)
	c.SetAfterAdd(nil)
	round(t, ctx, c, 1)
	w.wantHot(t, ctx, 0, 0)
	w.wantKeySubjects(t, ctx, 0)
	e, _, err := w.History.Lookup(ctx, keyID)
	if err != nil || rec.ResultSeq == 0 || e.ResultSeq != rec.ResultSeq || !e.DeliveredAt.Equal(rec.DeliveredAt.Truncate(time.Millisecond)) {
		t.Fatalf("history entry of the key: %+v, %v; want the job's delivery %v and result seq %d", e, err, rec.DeliveredAt, rec.ResultSeq)
	}
}

// wantKeySubjects fails unless BRIDGE_IDEMPOTENCY's stream has n subjects.
func (w world) wantKeySubjects(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	info, err := w.Res.IdempotencyStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := int(info.State.NumSubjects); got != n {
		t.Fatalf("%d subjects in BRIDGE_IDEMPOTENCY, want %d", got, n)
	}
}
