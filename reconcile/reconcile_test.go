package reconcile

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr error
	}{
		{"ok", func(*Config) {}, nil},
		{"no deliverer", func(c *Config) { c.Deliverer = nil }, ErrInvalidConfig},
		{"no api", func(c *Config) { c.API = nil }, ErrInvalidConfig},
		{"no budget", func(c *Config) { c.Budget = nil }, ErrInvalidConfig},
		{"no leases", func(c *Config) { c.Leases = nil }, ErrInvalidConfig},
		{"no watcher", func(c *Config) { c.Watcher = nil }, ErrInvalidConfig},
		{"poll too short", func(c *Config) { c.PollInterval = time.Millisecond }, ErrInvalidConfig},
		{"no grace", func(c *Config) { c.WebhookGrace = -1 }, nil},
		{"workers", func(c *Config) { c.Workers = -1 }, ErrInvalidConfig},
		{"lease ttl", func(c *Config) { c.LeaseTTL = time.Millisecond }, ErrInvalidConfig},
	}
	e := newEnv(t, simulator.Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Watcher: jobs.NewWatcher(e.Res.Jobs, 0, e.Log), Leases: e.Res.Leases, Deliverer: e.Deliverer, API: e.API, Budget: budget.Unlimited{}}
			tt.mod(&cfg)
			_, err := New(cfg)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("New: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestMissedWebhookRecoveredByPolling: a job whose webhook is dropped is published with source poll, at
// the cost of the in-flight pages plus one GET /job for it.
func TestMissedWebhookRecoveredByPolling(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	id := e.submit("hello", time.Minute)
	e.waitTerminal(id)
	jobCalls := e.Sim.CallCount(simulator.EndpointJob) // the test's own GETs

	rp := e.start("r1", nil)
	e.waitResults(10*time.Second, 1, id)

	got := e.resultsOf(id)
	if len(got) != 1 || got[0].Source != contract.SourcePoll || got[0].Subject != "results.prompt" || got[0].MsgID != id {
		t.Fatalf("results %+v, want one on results.prompt with source poll", got)
	}
	if rec := e.WaitState(id, jobs.StateDelivered, 5*time.Second); rec.Source != contract.SourcePoll {
		t.Fatalf("record source %s, want poll", rec.Source)
	}
	// Let two more sweep ticks pass: the index is empty, so they cost nothing.
	skipped := rp.r.m.sweeps.WithLabelValues("skipped")
	base := testutil.ToFloat64(skipped)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if n := testutil.ToFloat64(skipped); n < base+2 {
			return fmt.Errorf("%v skipped sweeps", n-base)
		}
		return nil
	})
	if n := e.Sim.CallCount(simulator.EndpointJob) - jobCalls; n != 1 {
		t.Fatalf("GET /job calls %d, want 1", n)
	}
	// One in-flight page per sweep that had something pending.
	if pages, sweeps := e.Sim.CallCount(simulator.EndpointJobs), int(rp.sweeps()); pages != sweeps || pages < 1 {
		t.Fatalf("GET /jobs calls %d, sweeps %d: want one page per sweep", pages, sweeps)
	}
	if n := testutil.ToFloat64(rp.r.m.recovered); n != 1 {
		t.Fatalf("recovered metric %v, want 1", n)
	}
}

// TestTimeoutOnceAtDeadline: a job that never finishes gets exactly one timeout result at its deadline.
func TestTimeoutOnceAtDeadline(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	rp := e.start("r1", nil)
	waitLeader(t, 5*time.Second, rp)

	start := time.Now()
	id := e.submit("stuck sim:hold", 1500*time.Millisecond)
	deadline := e.Record(id).Deadline
	e.waitResults(10*time.Second, 1, id)

	got := e.resultsOf(id)
	if len(got) != 1 {
		t.Fatalf("%d results, want 1", len(got))
	}
	r := got[0]
	if r.Subject != "results.prompt" || r.Source != contract.SourceTimeout || r.Status != upstream.StatusFailed ||
		r.ErrorCode != "BRIDGE_TIMEOUT" || r.Bridge.Source != contract.SourceTimeout {
		t.Fatalf("result %+v, want a timeout result", r)
	}
	// DESIGN: a timeout within one poll interval plus a few seconds of its deadline. The deadline timer
	// fires on time and the last GET answers at once, so here a poll interval plus one second (scheduling
	// on a busy 2-core box under -race) is the bound; it was a poll interval plus 5 s, 26 poll intervals.
	if late := r.Stored.Sub(deadline); late < 0 || late > testPoll+time.Second {
		t.Fatalf("timeout published %v after the deadline, want within a poll interval plus 1s", late)
	}
	t.Logf("timeout published %v after the deadline (%v after submit)", r.Stored.Sub(deadline), r.Stored.Sub(start))
	if rec := e.WaitState(id, jobs.StateTimedOut, 5*time.Second); rec.Source != contract.SourceTimeout {
		t.Fatalf("record source %s, want timeout", rec.Source)
	}
	// More sweeps (the job stays on the late watch, in flight): still one result.
	n := rp.sweeps()
	natstest.WaitFor(t, 5*time.Second, func() error {
		if rp.sweeps() < n+3 {
			return errors.New("waiting for sweeps")
		}
		return nil
	})
	if got := e.resultsOf(id); len(got) != 1 {
		t.Fatalf("%d results after more sweeps, want 1", len(got))
	}
	if v := testutil.ToFloat64(rp.r.m.timeouts); v != 1 {
		t.Fatalf("timeouts metric %v, want 1", v)
	}
}

// TestLateCompletionPublishedOnceOnLate: a job the bridge timed out and the upstream completed later,
// its webhook lost too, reaches results.late.<type> once by the late watch; a late webhook after that
// publishes nothing more.
func TestLateCompletionPublishedOnceOnLate(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	rp := e.start("r1", nil)
	waitLeader(t, 5*time.Second, rp)
	id := e.submit("slow sim:hold", time.Second)
	e.waitResults(10*time.Second, 1, id)
	e.WaitState(id, jobs.StateTimedOut, 5*time.Second)
	if err := e.Sim.CompleteJob(id, simulator.Outcome{Prohibited: true}); err != nil {
		t.Fatal(err)
	}
	e.waitResults(10*time.Second, 2, id)
	got := e.resultsOf(id)
	if len(got) != 2 || got[1].Subject != "results.late.prompt" || got[1].Source != contract.SourcePoll ||
		got[1].MsgID != id+contract.LateSuffix || got[1].Status != upstream.StatusCompleted {
		t.Fatalf("results %+v, want the timeout then one late result", got)
	}
	// The late webhook, verified, through the same path: nothing new.
	job, err := e.API.GetJob(e.ctx, id, upstream.ClassVerify)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.Deliverer.Deliver(e.ctx, job, contract.SourceWebhook, time.Now())
	if err != nil || out != jobs.AlreadyDelivered {
		t.Fatalf("late webhook: %v %v, want already delivered", out, err)
	}
	if got := e.resultsOf(id); len(got) != 2 {
		t.Fatalf("%d results, want 2", len(got))
	}
	if v := testutil.ToFloat64(rp.r.m.lateRecovered); v != 1 {
		t.Fatalf("late recovered metric %v, want 1", v)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if _, late := rp.r.idx.counts(); late != 0 {
			return fmt.Errorf("%d late-watched", late)
		}
		return nil
	})
}

// TestRestartRecoversPendingAndOverdue: jobs left pending while no reconciler ran (finished with lost
// webhooks, stuck, overdue or not) all end in one result when a new reconciler starts, its GETs paced
// by a small budget.
func TestRestartRecoversPendingAndOverdue(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	// A first reconciler leads, then stops cleanly.
	r1 := e.start("r1", nil)
	waitLeader(t, 5*time.Second, r1)
	r1.stop()

	var done, stuck, future []string
	for range 12 {
		done = append(done, e.submit("fine", 300*time.Millisecond)) // finishes, webhook lost, overdue
	}
	for range 5 {
		stuck = append(stuck, e.submit("stuck sim:hold", 300*time.Millisecond)) // overdue and stuck
	}
	for range 5 {
		future = append(future, e.submit("stuck too sim:hold", 3*time.Second)) // deadline ahead
	}
	for _, id := range done {
		e.waitTerminal(id)
	}
	// Let the short deadlines pass while no reconciler runs.
	natstest.WaitFor(t, 5*time.Second, func() error {
		if d := e.Record(stuck[len(stuck)-1]).Deadline; time.Now().Before(d.Add(200 * time.Millisecond)) {
			return errors.New("deadline ahead")
		}
		return nil
	})

	// The new one has a budget of 10 requests a second, 3 at once.
	b := testworld.StartBudget(t, budget.Config{KV: e.Res.Budget, RPM: 600, Burst: 3})
	api := e.Client(func(c *upstream.Config) { c.Limiter = b })
	r2 := e.start("r2", func(c *Config) { c.API, c.Budget = api, b })
	all := append(append(append([]string(nil), done...), stuck...), future...)
	e.waitResults(20*time.Second, 1, all...)

	for _, id := range all {
		got := e.resultsOf(id)
		if len(got) != 1 {
			t.Fatalf("job %s: %d results, want 1", id, len(got))
		}
	}
	for _, id := range done {
		if r := e.resultsOf(id)[0]; r.Source != contract.SourcePoll || r.Status != upstream.StatusCompleted {
			t.Fatalf("finished job %s: %+v, want its real result by poll", id, r)
		}
	}
	for _, id := range append(append([]string(nil), stuck...), future...) {
		if r := e.resultsOf(id)[0]; r.Source != contract.SourceTimeout || r.ErrorCode != "BRIDGE_TIMEOUT" {
			t.Fatalf("stuck job %s: %+v, want a timeout", id, r)
		}
	}
	for _, id := range future {
		r, rec := e.resultsOf(id)[0], e.Record(id)
		if r.Stored.Before(rec.Deadline) {
			t.Fatalf("job %s timed out %v before its deadline", id, rec.Deadline.Sub(r.Stored))
		}
	}
	if n := testutil.ToFloat64(r2.r.m.recovered); n != float64(len(done)) {
		t.Fatalf("recovered %v, want %d", n, len(done))
	}
}

// TestReplicasActLikeOne: three reconcilers give one result per job and the upstream traffic of one;
// a crashed leader (its connection gone, the lease no longer renewed) is replaced within about
// LeaseTTL, and a cleanly stopped one at once.
func TestReplicasActLikeOne(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) { testReplicasActLikeOne(t, topo) })
	}
}

func testReplicasActLikeOne(t *testing.T, topo testworld.Topology) {
	e := newEnvOn(t, topo, simulator.Config{DropRate: 1})
	rps := []*replica{e.start("r1", nil), e.start("r2", nil), e.start("r3", nil)}
	lead := waitLeader(t, 5*time.Second, rps...)

	var ids []string
	for range 5 {
		ids = append(ids, e.submit("fine", time.Minute))
	}
	for range 3 {
		ids = append(ids, e.submit("stuck sim:hold", 1500*time.Millisecond))
	}
	e.waitResults(15*time.Second, 1, ids...)
	for _, id := range ids {
		if got := e.resultsOf(id); len(got) != 1 {
			t.Fatalf("job %s: %d results, want 1", id, len(got))
		}
	}
	for _, rp := range rps {
		if rp != lead && rp.sweeps() != 0 {
			t.Fatalf("follower %s swept %v times", rp.r.Instance(), rp.sweeps())
		}
	}
	// One page per sweep of the leader (read between two sweeps: one may be under way).
	natstest.WaitFor(t, 5*time.Second, func() error {
		sweeps := 0.0
		for _, rp := range rps {
			sweeps += rp.sweeps()
		}
		if pages := e.Sim.CallCount(simulator.EndpointJobs); float64(pages) != sweeps {
			return fmt.Errorf("GET /jobs calls %d, sweeps %v: want the traffic of one reconciler", pages, sweeps)
		}
		return nil
	})

	// Crash: the leader's connection goes away; it cannot renew or release the lease.
	crashed := time.Now()
	lead.nc.Close()
	var rest []*replica
	for _, rp := range rps {
		if rp != lead {
			rest = append(rest, rp)
		}
	}
	next := waitLeader(t, 3*testTTL, rest...)
	t.Logf("takeover after crash: %v (LeaseTTL %v)", time.Since(crashed), testTTL)
	natstest.WaitFor(t, testTTL, func() error {
		if lead.leader() {
			return errors.New("crashed leader still acting")
		}
		return nil
	})

	// Clean stop: the lease is deleted and the standby takes over without waiting for the TTL.
	stopped := time.Now()
	next.stop()
	var last *replica
	for _, rp := range rest {
		if rp != next {
			last = rp
		}
	}
	waitLeader(t, testTTL/2, last)
	t.Logf("takeover after clean stop: %v", time.Since(stopped))

	// The new leader still works: a dropped webhook is recovered.
	id := e.submit("after failover", time.Minute)
	e.waitResults(10*time.Second, 1, id)
	if got := e.resultsOf(id); len(got) != 1 || got[0].Source != contract.SourcePoll {
		t.Fatalf("results %+v, want one by poll", got)
	}
}

// TestLeaseRenewalOutlivesTTL: renewals keep the lease past several bucket TTLs (each renewal is a new
// message whose age restarts the TTL), a standby never takes it meanwhile, and without renewals the key
// expires after about LeaseTTL.
func TestLeaseRenewalOutlivesTTL(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	r1 := e.start("r1", nil)
	waitLeader(t, 5*time.Second, r1)
	first, err := e.Res.Leases.Get(e.ctx, LeaseKey)
	if err != nil {
		t.Fatal(err)
	}
	r2 := e.start("r2", nil)
	acquired := first.Created()
	natstest.WaitFor(t, 10*testTTL, func() error {
		if since := time.Since(acquired); since < 3*testTTL {
			return fmt.Errorf("lease held %v", since)
		}
		return nil
	})
	cur, err := e.Res.Leases.Get(e.ctx, LeaseKey)
	if err != nil {
		t.Fatalf("lease after 3 TTLs: %v", err)
	}
	if string(cur.Value()) != "r1" || cur.Revision() <= first.Revision()+5 {
		t.Fatalf("lease %q rev %d (first %d), want r1 renewed about every TTL/3", cur.Value(), cur.Revision(), first.Revision())
	}
	if r2.leader() || r2.sweeps() != 0 {
		t.Fatal("standby acted while the lease was renewed")
	}
	// No more renewals: the key expires by the bucket TTL.
	r1.nc.Close()
	lastRenewal := cur.Created()
	natstest.WaitFor(t, 3*testTTL, func() error {
		e, err := e.Res.Leases.Get(e.ctx, LeaseKey)
		if err == nil && string(e.Value()) == "r1" {
			return errors.New("lease still r1's")
		}
		return nil
	})
	t.Logf("r1's lease gone %v after its last renewal", time.Since(lastRenewal))
	waitLeader(t, 2*testTTL, r2)
}

// TestWebhookAndPollRaceGiveOneResult: the verifier's Deliver (source webhook) and the reconciler's poll
// racing for the same jobs still publish one result per job, and JOBS records the one that won.
func TestWebhookAndPollRaceGiveOneResult(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	// No grace and a fast sweep: each job is fetched as soon as its record appears.
	rp := e.start("r1", func(c *Config) { c.WebhookGrace = -1; c.PollInterval = 20 * time.Millisecond })
	waitLeader(t, 5*time.Second, rp)
	var ids []string
	jobsByID := map[string]upstream.Job{}
	for range 20 {
		sub, err := e.API.Submit(e.ctx, "prompt", map[string]string{"prompt": "race"}, "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sub.JobID)
	}
	for _, id := range ids {
		e.waitTerminal(id)
		j, err := e.API.GetJob(e.ctx, id, upstream.ClassVerify)
		if err != nil {
			t.Fatal(err)
		}
		jobsByID[id] = j
	}
	// Record each job, then deliver its "webhook" after a jitter of up to two sweeps, while the
	// reconciler polls it.
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			e.record(id, time.Now(), time.Minute)
			time.Sleep(time.Duration(i%10) * 12 * time.Millisecond) // jitter, not synchronisation
			if _, err := e.Deliverer.Deliver(e.ctx, jobsByID[id], contract.SourceWebhook, time.Now()); err != nil {
				t.Errorf("deliver %s: %v", id, err)
			}
		})
	}
	wg.Wait()
	e.waitResults(10*time.Second, 1, ids...)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if p, _ := rp.r.idx.counts(); p != 0 {
			return fmt.Errorf("%d pending", p)
		}
		return nil
	})
	winners := map[string]int{}
	for _, id := range ids {
		got := e.resultsOf(id)
		if len(got) != 1 {
			t.Fatalf("job %s: %d results, want 1", id, len(got))
		}
		winners[got[0].Source]++
		if rec := e.WaitState(id, jobs.StateDelivered, 5*time.Second); rec.Source != got[0].Source || rec.ResultSeq != got[0].Seq {
			t.Fatalf("job %s: record %s/%s seq %d, result %s seq %d", id, rec.State, rec.Source, rec.ResultSeq, got[0].Source, got[0].Seq)
		}
	}
	t.Logf("winners by source: %v", winners)
}

// TestUnknownUpstreamLeftToDeadline: a pending job the upstream does not know (404) costs three GETs
// in sweeps a poll interval apart and the last check at its deadline, is counted, and times out at its
// deadline with the synthesized body.
func TestUnknownUpstreamLeftToDeadline(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	id := "00000000-0000-4000-8000-000000000001"
	e.record(id, time.Now(), 2*time.Second)
	rp := e.start("r1", nil)
	natstest.WaitFor(t, 5*time.Second, func() error {
		if testutil.ToFloat64(rp.r.m.notFound) < 1 {
			return errors.New("no 404 yet")
		}
		return nil
	})
	e.waitResults(10*time.Second, 1, id)
	r := e.resultsOf(id)[0]
	if r.Source != contract.SourceTimeout || r.Subject != "results.prompt" {
		t.Fatalf("result %+v, want a timeout on results.prompt", r)
	}
	// Three 404s in sweeps, then the last check at the deadline (issue 12 finding 4: one 404 is not
	// enough to stop asking).
	calls := 0
	for _, c := range e.Sim.Calls(simulator.EndpointJob) {
		if strings.Contains(c.Path, id) {
			calls++
		}
	}
	if calls != 4 {
		t.Fatalf("GET /job calls for the unknown job %d, want 4", calls)
	}
	if v := testutil.ToFloat64(rp.r.m.notFound); v != 4 {
		t.Fatalf("not-found metric %v, want 4", v)
	}
}

// TestJobsIndexFollowsWatch: the index takes pending records, drops delivered and deleted ones, and
// keeps timed-out ones on the late watch.
func TestJobsIndexFollowsWatch(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	for i := range 50 {
		e.record(fmt.Sprintf("job-%03d", i), time.Now(), time.Hour)
	}
	rp := e.start("r1", func(c *Config) { c.PollInterval = time.Hour })
	natstest.WaitFor(t, 5*time.Second, func() error {
		if p, _ := rp.r.idx.counts(); p != 50 {
			return fmt.Errorf("%d pending", p)
		}
		return nil
	})
	if err := e.Res.Jobs.Delete(e.ctx, "job-000"); err != nil {
		t.Fatal(err)
	}
	if err := e.Res.Jobs.Purge(e.ctx, "job-001"); err != nil {
		t.Fatal(err)
	}
	for i, st := range map[int]jobs.State{2: jobs.StateDelivered, 3: jobs.StateTimedOut} {
		if _, err := e.Store.Update(e.ctx, fmt.Sprintf("job-%03d", i), func(r *jobs.Record) (bool, error) {
			r.State = st
			return true, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		p, l := rp.r.idx.counts()
		if p != 46 || l != 1 {
			return fmt.Errorf("%d pending, %d late, want 46, 1", p, l)
		}
		if g := testutil.ToFloat64(rp.r.m.pending.WithLabelValues("prompt")); g != 46 {
			return fmt.Errorf("pending gauge %v", g)
		}
		return nil
	})
	if _, err := e.Res.Jobs.Get(e.ctx, "job-000"); !errors.Is(err, jetstream.ErrKeyDeleted) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
}

// TestDeadlineCheckRetriesPassingErrors: a finished job whose webhook was lost, and whose GET /job fails
// when its deadline comes, is delivered by the last check once the upstream answers again, not timed out.
func TestDeadlineCheckRetriesPassingErrors(t *testing.T) {
	e := newEnv(t, simulator.Config{DropRate: 1})
	e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{ErrorRate: 1})
	id := e.submit("hello", 1500*time.Millisecond)
	deadline := e.Record(id).Deadline
	natstest.WaitFor(t, 10*time.Second, func() error {
		if j, ok := e.Sim.Job(id); !ok || j.Status != upstream.StatusCompleted {
			return fmt.Errorf("job %s not completed upstream yet", id)
		}
		return nil
	})
	rp := e.start("r1", nil)
	waitLeader(t, 5*time.Second, rp)

	// The first GET /job at or after the deadline fails: the last check has met the outage.
	natstest.WaitFor(t, 10*time.Second, func() error {
		for _, c := range e.Sim.Calls(simulator.EndpointJob) {
			if !c.At.Before(deadline) {
				return nil
			}
		}
		return errors.New("no GET /job at or after the deadline yet")
	})
	e.Sim.SetFault(simulator.EndpointJob, simulator.Fault{})
	e.waitResults(10*time.Second, 1, id)

	got := e.resultsOf(id)
	if len(got) != 1 || got[0].Source != contract.SourcePoll || got[0].Status != upstream.StatusCompleted {
		t.Fatalf("results %+v, want one completed result with source poll, not a timeout", got)
	}
	if v := testutil.ToFloat64(rp.r.m.timeouts); v != 0 {
		t.Fatalf("timeouts metric %v, want 0", v)
	}
}
