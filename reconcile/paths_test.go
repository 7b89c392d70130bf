package reconcile

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestInFlightListFailing covers a path nothing reached (issue 12): while GET /jobs fails, sweeps count
// errors and fetch nothing (they cannot tell a missed job from a running one), deadlines still time jobs
// out, and the first list that answers again recovers the missed job by poll.
func TestInFlightListFailing(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	e.Sim.SetFault(simulator.EndpointJobs, simulator.Fault{ErrorRate: 1})
	missed := e.submit("missed", time.Minute)
	e.waitCompleted(missed)
	stuck := e.submit("stuck sim:hold", 1500*time.Millisecond)
	rp := e.start("r1", nil)
	failed := rp.r.m.sweeps.WithLabelValues("error")

	e.waitResults(10*time.Second, 1, stuck)
	if got := e.resultsOf(stuck); len(got) != 1 || got[0].Source != contract.SourceTimeout {
		t.Fatalf("stuck job: %+v, want a timeout while the list fails", got)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if n := testutil.ToFloat64(failed); n < 3 {
			return fmt.Errorf("%v failed sweeps", n)
		}
		return nil
	})
	if got := e.resultsOf(missed); len(got) != 0 {
		t.Fatalf("missed job published without an in-flight list: %+v", got)
	}
	if n := len(e.jobGETs(missed)); n != 0 {
		t.Fatalf("%d GETs of the missed job without an in-flight list, want 0", n)
	}
	if ok, errs := rp.sweeps(), testutil.ToFloat64(rp.r.m.errors.WithLabelValues("inflight")); ok != 0 || errs != testutil.ToFloat64(failed) {
		t.Fatalf("sweeps ok %v, inflight errors %v, failed sweeps %v: want 0 ok, one error a failed sweep", ok, errs, testutil.ToFloat64(failed))
	}

	e.Sim.SetFault(simulator.EndpointJobs, simulator.Fault{})
	e.waitResults(10*time.Second, 1, missed)
	if got := e.resultsOf(missed); len(got) != 1 || got[0].Source != contract.SourcePoll || got[0].Status != upstream.StatusCompleted {
		t.Fatalf("missed job: %+v, want its result by poll", got)
	}
}

// TestLeaseTakenOverStopsTheLoser covers a split brain (issue 12): the lease key is overwritten by
// another holder while r1 leads. r1 must stop acting at its next renewal (no more sweeps, no upstream
// calls), no replica leads while the foreign holder's key lives, one takes over once it expires, and
// every job still gets exactly one result with the in-flight traffic of one reconciler.
func TestLeaseTakenOverStopsTheLoser(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	r1 := e.start("r1", nil)
	waitLeader(t, 5*time.Second, r1)
	r2 := e.start("r2", nil)
	before := []string{e.submit("before", time.Minute), e.submit("before stuck sim:hold", 2*time.Second)}
	e.waitResults(10*time.Second, 1, before[0])

	if _, err := e.Res.Leases.Put(e.ctx, LeaseKey, []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	taken := time.Now()
	natstest.WaitFor(t, testTTL, func() error {
		if r1.leader() {
			return errors.New("r1 still leads")
		}
		return nil
	})
	t.Logf("r1 stopped %v after the takeover", time.Since(taken))
	// While the intruder's key lives nobody leads: r1's sweeps stop at once and r2 never starts.
	sweeps1 := r1.sweeps()
	jobsCalls := e.Sim.CallCount(simulator.EndpointJobs)
	checks := 0
	natstest.WaitFor(t, 3*testTTL, func() error {
		// Read the acting replicas first, then the lease: what was read happened under the intruder's lease.
		lead1, lead2 := r1.leader(), r2.leader()
		s, c := r1.sweeps(), e.Sim.CallCount(simulator.EndpointJobs)
		if v, err := e.Res.Leases.Get(e.ctx, LeaseKey); err == nil && string(v.Value()) == "intruder" {
			checks++
			if lead1 || lead2 {
				t.Fatalf("a replica leads while the intruder holds the lease")
			}
			if s != sweeps1 || c != jobsCalls {
				t.Fatalf("after losing the lease r1 swept %v more times and GET /jobs was called %d more times, want 0",
					s-sweeps1, c-jobsCalls)
			}
			return errors.New("intruder still holds the lease")
		}
		return nil
	})
	if checks < 10 {
		t.Fatalf("only %d checks while the intruder held the lease", checks)
	}
	next := waitLeader(t, 3*testTTL, r1, r2)
	t.Logf("%s leads after the intruder's key expired", next.r.Instance())

	after := []string{e.submit("after", time.Minute), e.submit("after stuck sim:hold", 1500*time.Millisecond)}
	all := append(before, after...)
	e.waitResults(15*time.Second, 1, all...)
	for _, id := range all {
		if got := e.resultsOf(id); len(got) != 1 {
			t.Fatalf("job %s: %d results, want 1", id, len(got))
		}
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if pages, sweeps := e.Sim.CallCount(simulator.EndpointJobs), int(r1.sweeps()+r2.sweeps()); pages != sweeps {
			return fmt.Errorf("GET /jobs calls %d, sweeps %d: want one page per sweep of one leader", pages, sweeps)
		}
		return nil
	})
}

// TestJobsWatchSurvivesRestart covers the index across a NATS restart (issue 12): after the node comes
// back, the index still holds the jobs recorded before (a stuck one times out at its deadline), and takes
// jobs recorded after (a missed webhook is recovered) and records that leave pending. The JOBS watcher's
// probe is what keeps this within the 5 s wait (see jobs.TestWatcherFollowsAcrossRestart): without it
// the job recorded after the restart was recovered about 20 s late.
func TestJobsWatchSurvivesRestart(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	rp := e.start("r1", nil)
	waitLeader(t, 5*time.Second, rp)
	stuck := e.submit("stuck sim:hold", 3*time.Second)
	held := e.submit("held sim:hold", time.Minute)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if p, _ := rp.r.idx.counts(); p != 2 {
			return fmt.Errorf("%d pending", p)
		}
		return nil
	})

	e.Node.Restart(t)
	waitLeader(t, 10*time.Second, rp)

	missed := e.submit("after restart", time.Minute)
	e.waitResults(5*time.Second, 1, missed)
	e.waitResults(5*time.Second, 1, stuck)
	if got := e.resultsOf(stuck); len(got) != 1 || got[0].Source != contract.SourceTimeout {
		t.Fatalf("stuck job: %+v, want one timeout", got)
	}
	if got := e.resultsOf(missed); len(got) != 1 || got[0].Source != contract.SourcePoll {
		t.Fatalf("job recorded after the restart: %+v, want one result by poll", got)
	}
	// A record that leaves pending leaves the index: deliver the held job as its webhook would.
	if err := e.Sim.CompleteJob(held, simulator.Outcome{}); err != nil {
		t.Fatal(err)
	}
	job, err := e.API.GetJob(e.ctx, held, upstream.ClassVerify)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Deliverer.Deliver(e.ctx, job, contract.SourceWebhook, time.Now()); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if p, _ := rp.r.idx.counts(); p != 0 {
			return fmt.Errorf("%d pending, want 0", p)
		}
		return nil
	})
	if got := e.resultsOf(held); len(got) != 1 || got[0].Source != contract.SourceWebhook {
		t.Fatalf("held job: %+v, want one result by its webhook", got)
	}
	e.WaitState(stuck, jobs.StateTimedOut, 5*time.Second)
	if _, err := e.Res.Jobs.Get(e.ctx, missed); errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatal("record of the job submitted after the restart is missing")
	}
}

// TestJobsWatchReopensWhenBucketRecreated covers the JOBS watch reopening (issue 12): when the bucket is
// deleted and made again, the index is rebuilt from the watcher's new replay. Before the probe (see
// jobs.TestWatcherReopensWhenBucketRecreated), the old job stayed in the index and the new one never came.
func TestJobsWatchReopensWhenBucketRecreated(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	rp := e.start("r1", nil)
	waitLeader(t, 5*time.Second, rp)
	old := e.submit("old sim:hold", time.Minute)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if p, _ := rp.r.idx.counts(); p != 1 {
			return fmt.Errorf("%d pending", p)
		}
		return nil
	})
	if err := e.JS.DeleteKeyValue(e.ctx, contract.Default.BucketJobs); err != nil {
		t.Fatal(err)
	}
	e.Provision()
	fresh := e.submit("fresh", time.Minute)
	natstest.WaitFor(t, 5*time.Second, func() error {
		rp.r.idx.mu.Lock()
		defer rp.r.idx.mu.Unlock()
		if rp.r.idx.byID[fresh] == nil || rp.r.idx.byID[old] != nil {
			return fmt.Errorf("index has the new job %v, the old one %v; want only the new", rp.r.idx.byID[fresh] != nil, rp.r.idx.byID[old] != nil)
		}
		return nil
	})
	e.waitResults(5*time.Second, 1, fresh)
	if got := e.resultsOf(fresh); len(got) != 1 || got[0].Source != contract.SourcePoll {
		t.Fatalf("new job: %+v, want one result by poll", got)
	}
}
