package reconcile

import (
	"errors"
	"fmt"
	"strings"
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

// fillResults makes RESULTS refuse every new publish, as a stream full under BRIDGE_STREAM_MAX_BYTES
// does (discard new): it caps the stream's bytes and publishes filler on results.filler until a publish
// fails. The returned func restores the stream's limits.
func (e *env) fillResults() (restore func()) {
	e.t.Helper()
	s, err := e.JS.Stream(e.ctx, contract.Default.StreamResults)
	if err != nil {
		e.t.Fatalf("results stream: %v", err)
	}
	info, err := s.Info(e.ctx)
	if err != nil {
		e.t.Fatalf("results info: %v", err)
	}
	orig := info.Config
	capped := orig
	capped.MaxBytes, capped.Discard = int64(info.State.Bytes)+4096, jetstream.DiscardNew
	if _, err := e.JS.UpdateStream(e.ctx, capped); err != nil {
		e.t.Fatalf("cap RESULTS: %v", err)
	}
	filler := []byte(`{"job_id":"filler","pad":"` + strings.Repeat("x", 400) + `"}`)
	for i := 0; ; i++ {
		if i > 100 {
			e.t.Fatal("RESULTS still takes publishes after 100 fillers")
		}
		if _, err := e.JS.Publish(e.ctx, "results.filler", filler); err != nil {
			break
		}
	}
	return func() {
		e.t.Helper()
		if _, err := e.JS.UpdateStream(e.ctx, orig); err != nil {
			e.t.Fatalf("restore RESULTS: %v", err)
		}
	}
}

// waitCompleted waits until the simulator has completed the job, asking it directly (no GET /job).
func (e *env) waitCompleted(id string) {
	e.t.Helper()
	natstest.WaitFor(e.t, 10*time.Second, func() error {
		if j, ok := e.Sim.Job(id); !ok || j.Status != upstream.StatusCompleted {
			return fmt.Errorf("job %s not completed upstream yet", id)
		}
		return nil
	})
}

// jobGETs returns the simulator's GET /job calls for id, oldest first.
func (e *env) jobGETs(id string) []simulator.Call {
	var out []simulator.Call
	for _, c := range e.Sim.Calls(simulator.EndpointJob) {
		if strings.HasSuffix(c.Path, "/"+id) {
			out = append(out, c)
		}
	}
	return out
}

// TestDeadlineDeliveryFailingBacksOff pins finding 3 of issue 12: a deadline check whose delivery keeps
// failing (RESULTS full) retried forever at one GET /job every 2 s. Now each failure in a row doubles
// the delay (here 100 ms up to 800 ms), the jobs are counted in bridge_reconcile_deliver_failing, and
// once RESULTS takes publishes again the stuck job times out and the job that finished meanwhile is
// delivered, one result each.
func TestDeadlineDeliveryFailingBacksOff(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	rp := e.start("r1", func(c *Config) { c.retryMin, c.retryMax = 100*time.Millisecond, 800*time.Millisecond })
	waitLeader(t, 5*time.Second, rp)
	restore := e.fillResults()

	stuck := e.submit("stuck sim:hold", 300*time.Millisecond)
	finished := e.submit("finishes late sim:hold", 300*time.Millisecond)
	deadline := e.Record(stuck).Deadline

	// Eight last checks of the stuck job, each one GET: seven gaps of 100, 200, 400 and then 800 ms.
	natstest.WaitFor(t, 20*time.Second, func() error {
		if n := len(e.jobGETs(stuck)); n < 8 {
			return fmt.Errorf("%d GETs of the stuck job", n)
		}
		return nil
	})
	if v := testutil.ToFloat64(rp.r.m.deliverFailing); v != 2 {
		t.Fatalf("deliver_failing %v, want 2", v)
	}
	completedAt := time.Now()
	if err := e.Sim.CompleteJob(finished, simulator.Outcome{Prohibited: true}); err != nil {
		t.Fatal(err)
	}
	// A check of the finished job that began before CompleteJob would still publish its timeout once
	// RESULTS takes writes again. A job's checks run one after another, so one GET that began after
	// CompleteJob means that every earlier check is over: only then make room.
	natstest.WaitFor(t, 10*time.Second, func() error {
		for _, c := range e.jobGETs(finished) {
			if c.At.After(completedAt) {
				return nil
			}
		}
		return errors.New("no GET of the finished job since it completed")
	})
	calls := e.jobGETs(stuck)[:8]
	if calls[0].At.Before(deadline) {
		t.Fatalf("first GET at %v, before the deadline %v", calls[0].At, deadline)
	}
	want := []time.Duration{100, 200, 400, 800, 800, 800, 800}
	for i, w := range want {
		gap, w := calls[i+1].At.Sub(calls[i].At), w*time.Millisecond
		// At least the backoff; at most the backoff plus a generous second of scheduling on a busy box
		// (a check without backoff would come 100 ms after the one before, the old code's 2 s after).
		if gap < w || gap > w+time.Second {
			t.Errorf("GET %d came %v after GET %d, want %v (plus scheduling)", i+2, gap, i+1, w)
		}
	}

	restore()
	e.waitResults(10*time.Second, 1, stuck, finished)
	if got := e.resultsOf(stuck); len(got) != 1 || got[0].Source != contract.SourceTimeout || got[0].ErrorCode != "BRIDGE_TIMEOUT" {
		t.Fatalf("stuck job: results %+v, want one timeout", got)
	}
	if got := e.resultsOf(finished); len(got) != 1 || got[0].Source != contract.SourcePoll || got[0].Status != upstream.StatusCompleted {
		t.Fatalf("finished job: results %+v, want its completed result by poll", got)
	}
	e.WaitState(stuck, jobs.StateTimedOut, 5*time.Second)
	e.WaitState(finished, jobs.StateDelivered, 5*time.Second)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if v := testutil.ToFloat64(rp.r.m.deliverFailing); v != 0 {
			return fmt.Errorf("deliver_failing %v, want 0", v)
		}
		return nil
	})
}

// TestTransient404KeepsPolling pins finding 4 of issue 12: one 404 marked a pending job gone for good,
// so a job the upstream found again was never polled and timed out without its last check. Here the
// upstream answers 404 once, then the finished job: the next sweep delivers it by poll, well before its
// deadline.
func TestTransient404KeepsPolling(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	id := e.submit("found again", 5*time.Second)
	e.waitCompleted(id)
	deadline := e.Record(id).Deadline
	e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{ErrorRate: 1, ErrorStatus: 404})
	rp := e.start("r1", nil)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if testutil.ToFloat64(rp.r.m.notFound) < 1 {
			return errors.New("no 404 yet")
		}
		return nil
	})
	e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{})
	e.waitResults(10*time.Second, 1, id)
	got := e.resultsOf(id)
	if len(got) != 1 || got[0].Source != contract.SourcePoll || got[0].Status != upstream.StatusCompleted {
		t.Fatalf("results %+v, want the completed result by poll", got)
	}
	if !got[0].Stored.Before(deadline) {
		t.Fatalf("result stored at %v, not before the deadline %v: the sweeps stopped at the 404", got[0].Stored, deadline)
	}
}

// TestLastCheckAfterRepeated404 pins finding 4 of issue 12 too: after three 404s a poll interval apart
// the sweeps stop fetching the job, but its deadline check still asks once more, and a job the upstream
// found again by then is delivered with its real result, not timed out. Four GETs in all.
func TestLastCheckAfterRepeated404(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	id := e.submit("lost for a while", 3*time.Second)
	e.waitCompleted(id)
	deadline := e.Record(id).Deadline
	e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{ErrorRate: 1, ErrorStatus: 404})
	rp := e.start("r1", nil)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if n := testutil.ToFloat64(rp.r.m.notFound); n < 3 {
			return fmt.Errorf("%v 404s", n)
		}
		return nil
	})
	e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{})
	if now := time.Now(); !now.Before(deadline) {
		t.Fatalf("three 404s took until %v, past the deadline %v", now, deadline)
	}
	e.waitResults(10*time.Second, 1, id)
	got := e.resultsOf(id)
	if len(got) != 1 || got[0].Source != contract.SourcePoll || got[0].Status != upstream.StatusCompleted {
		t.Fatalf("results %+v, want the completed result by the last check", got)
	}
	if got[0].Stored.Before(deadline) {
		t.Fatalf("result stored %v before the deadline: a sweep fetched a job marked gone", deadline.Sub(got[0].Stored))
	}
	calls := e.jobGETs(id)
	if len(calls) != 4 {
		t.Fatalf("%d GETs of the job, want 4 (three 404s, the last check)", len(calls))
	}
	for i := 1; i < 3; i++ {
		if gap := calls[i].At.Sub(calls[i-1].At); gap < testPoll {
			t.Errorf("404 %d came %v after the one before, want at least a poll interval (%v)", i+1, gap, testPoll)
		}
	}
	if v := testutil.ToFloat64(rp.r.m.timeouts); v != 0 {
		t.Fatalf("timeouts %v, want 0", v)
	}
}

// TestDeliverFailingIsTheLeadersAlone: a leader that loses its lease while deadline deliveries keep
// failing stops counting them in bridge_reconcile_deliver_failing, so the gauge summed over replicas
// is the number of failing jobs, not that number once per former leader.
func TestDeliverFailingIsTheLeadersAlone(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	rp := e.start("r1", func(c *Config) { c.retryMin, c.retryMax = 100*time.Millisecond, 800*time.Millisecond })
	waitLeader(t, 5*time.Second, rp)
	e.fillResults()
	e.submit("stuck sim:hold", 300*time.Millisecond)
	natstest.WaitFor(t, 20*time.Second, func() error {
		if v := testutil.ToFloat64(rp.r.m.deliverFailing); v != 1 {
			return fmt.Errorf("deliver_failing %v, want 1", v)
		}
		return nil
	})
	if _, err := e.Res.Leases.Put(e.ctx, LeaseKey, []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, testTTL, func() error {
		if rp.leader() {
			return errors.New("r1 still leads")
		}
		if v := testutil.ToFloat64(rp.r.m.deliverFailing); v != 0 {
			return fmt.Errorf("deliver_failing %v after losing the lease, want 0", v)
		}
		return nil
	})
}
