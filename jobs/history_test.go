package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
)

// TestCompactedJobNeverPublishedAgain: a job delivered and then compacted (its id in the history, its
// record and fence gone) comes back after the duplicate window as a webhook, a poll and an adoption:
// nothing is published, and no hot record comes back for it.
func TestCompactedJobNeverPublishedAgain(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) { testCompactedJobNeverPublishedAgain(t, topo) })
	}
}

func testCompactedJobNeverPublishedAgain(t *testing.T, topo testworld.Topology) {
	w := fenceWorld(t, testworld.WithTopology(topo))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := w.overdueJob(t, ctx, "prompt")
	if out, err := w.Deliverer.Deliver(ctx, job, contract.SourceWebhook, time.Now()); err != nil || out != jobs.Published {
		t.Fatalf("first delivery: %v %v", out, err)
	}
	published := time.Now()
	w.Compact(job.JobID)
	outliveWindow(published)

	for _, source := range []string{contract.SourceWebhook, contract.SourcePoll} {
		if out, err := w.Deliverer.Deliver(ctx, job, source, time.Now()); err != nil || out != jobs.AlreadyDelivered {
			t.Fatalf("%s delivery of a compacted job: %v %v, want already_delivered", source, out, err)
		}
	}
	if created, err := w.Deliverer.Adopt(ctx, job); err != nil || created {
		t.Fatalf("adoption of a compacted job: created %v, %v; want false, nil", created, err)
	}
	if _, _, err := w.Deliverer.Ensure(ctx, job); !errors.Is(err, jobs.ErrInHistory) || !errors.Is(err, jobs.ErrAlreadyPublished) {
		t.Fatalf("Ensure of a compacted job: %v, want ErrInHistory", err)
	}
	if _, _, err := w.Store.Get(ctx, job.JobID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("record of a compacted job: %v, want ErrNotFound (no hot record again)", err)
	}
	if n := len(w.msgsByID(t, job.JobID)); n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	if out, err := w.Deliverer.TimeOut(ctx, job.JobID, nil); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("timeout of a compacted job: %v %v, want ErrNotFound", out, err)
	}
}

// TestPausedDelivererAfterCompactionPublishesNothing: a deliverer read the job's record pending and paused
// before its claim; meanwhile another delivered the job, and after the duplicate window the job was
// compacted, which emptied its fence. When the paused one resumes, its claim on the empty fence is
// stored, and only the history lookup after the claim stops its result.
func TestPausedDelivererAfterCompactionPublishesNothing(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) { testPausedDelivererAfterCompaction(t, topo) })
	}
}

func testPausedDelivererAfterCompaction(t *testing.T, topo testworld.Topology) {
	w := fenceWorld(t, testworld.WithTopology(topo))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := w.overdueJob(t, ctx, "video")
	r := w.pausedRace(t, jobs.DelivererConfig{JS: w.JS, Store: w.Store, History: w.History}, job,
		func() { w.Compact(job.JobID) })
	if n := len(w.msgsByID(t, job.JobID)); n != 1 {
		t.Fatalf("%d results for the job, want 1", n)
	}
	if r.err != nil || r.out != jobs.AlreadyDelivered {
		t.Fatalf("resumed deliverer: %v %v, want already_delivered", r.out, r.err)
	}
	if _, _, err := w.Store.Get(ctx, job.JobID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("record of a compacted job: %v, want ErrNotFound", err)
	}
}
