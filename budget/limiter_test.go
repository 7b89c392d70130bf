package budget_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/internal/clock"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// manual starts one budget process of rpm and burst on a manual clock: time moves only when the test
// advances clk. Submissions may wait a minute before they are refused as busy.
func manual(t *testing.T, rpm, burst int) (*budget.Shared, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 5, 19, 12, 0, 0, 0, time.UTC))
	bs := startProcesses(t, 1, func(int) budget.Config {
		return budget.Config{RPM: rpm, Burst: burst, Clock: clk, SubmitWait: time.Minute,
			Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
	})
	return bs[0], clk
}

// queuedWithin waits until n calls wait for b.
func queuedWithin(t *testing.T, b *budget.Shared, n int) {
	t.Helper()
	natstest.WaitFor(t, 10*time.Second, func() error {
		if q := b.Queued(); q != n {
			return errors.New("waiting for the queue")
		}
		return nil
	})
}

// TestSharedFinishesBeforeItStarts queues a submission, then polls, then a verification, and checks the
// order of service when one token comes per second: accepted work first (the verification, then the
// polls FIFO), the new submission last.
func TestSharedFinishesBeforeItStarts(t *testing.T) {
	b, clk := manual(t, 60, 1)
	ctx := natstest.CtxWithin(t, 20*time.Second)
	if err := b.Wait(ctx, upstream.ClassPoll); err != nil { // spend the only token
		t.Fatal(err)
	}
	done := make(chan string, 8)
	enqueue := func(name string, c upstream.Class) {
		before := b.Queued()
		go func() {
			if err := b.Wait(ctx, c); err != nil {
				done <- "error: " + err.Error()
				return
			}
			done <- name
		}()
		queuedWithin(t, b, before+1)
	}
	enqueue("submit", upstream.ClassSubmit)
	enqueue("poll1", upstream.ClassPoll)
	enqueue("poll2", upstream.ClassPoll)
	enqueue("poll3", upstream.ClassPoll)
	enqueue("verify", upstream.ClassVerify)

	for _, want := range []string{"verify", "poll1", "poll2", "poll3", "submit"} {
		clk.Advance(time.Second)
		if got := natstest.RecvWithin(t, done, 10*time.Second); got != want {
			t.Fatalf("served %s, want %s", got, want)
		}
	}
}

// TestSharedCancelledWaiterLeavesQueue: a waiter whose ctx ends leaves the queue with ctx's error, and
// the token it would have had is there for the next caller.
func TestSharedCancelledWaiterLeavesQueue(t *testing.T) {
	b, clk := manual(t, 60, 1)
	bg := natstest.CtxWithin(t, 20*time.Second)
	if err := b.Wait(bg, upstream.ClassSubmit); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	errc := make(chan error, 1)
	go func() { errc <- b.Wait(ctx, upstream.ClassSubmit) }()
	queuedWithin(t, b, 1)
	cancel()
	if err := natstest.RecvWithin(t, errc, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait = %v, want context.Canceled", err)
	}
	if q := b.Queued(); q != 0 {
		t.Fatalf("%d still queued", q)
	}
	clk.Advance(time.Second)
	if got := b.Available(); got < 1 {
		t.Fatalf("available %v after 1s, want 1", got)
	}
}

// TestRateLimitPausesClient: a 429 with Retry-After pauses every call of the client for that long, on a
// manual clock.
func TestRateLimitPausesClient(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{ProcessDelay: time.Hour})
	b, clk := manual(t, 600, 20)
	c := simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.Limiter = b })
	ctx := natstest.Ctx(t)
	s, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "")
	if err != nil {
		t.Fatal(err)
	}
	sim.SetFault(simulator.EndpointJob, simulator.Fault{RateLimitRate: 1, RetryAfter: 7 * time.Second})
	_, err = c.GetJob(ctx, s.JobID, upstream.ClassVerify)
	if ue, ok := errors.AsType[*upstream.Error](err); !ok || ue.Status != 429 || ue.RetryAfter != 7*time.Second {
		t.Fatalf("got %v; want 429 with RetryAfter 7s", err)
	}
	sim.SetFault(simulator.EndpointJob, simulator.Fault{})
	if a := b.Available(); a != 0 {
		t.Fatalf("Available during pause = %v", a)
	}

	done := make(chan error, 1)
	go func() { _, err := c.GetJob(ctx, s.JobID, upstream.ClassVerify); done <- err }()
	queuedWithin(t, b, 1)
	clk.Advance(6 * time.Second)
	if b.Queued() != 1 || sim.CallCount(simulator.EndpointJob) != 1 {
		t.Fatalf("call left the queue before Retry-After (queued %d, calls %d)", b.Queued(), sim.CallCount(simulator.EndpointJob))
	}
	// The bucket refills from empty at half the rate after the pause: 5 a second, so within 2s.
	clk.Advance(2 * time.Second)
	if err := natstest.RecvWithin(t, done, 10*time.Second); err != nil {
		t.Fatalf("call after pause: %v", err)
	}
	if n := sim.CallCount(simulator.EndpointJob); n != 2 {
		t.Fatalf("%d job calls, want 2", n)
	}
}

// TestBudgetHoldsAgainstSimulator runs contending calls at 1200 RPM (20/s) with burst 2 and checks the
// simulator's record: no second holds more than rate + burst (+1 for timestamping skew).
func TestBudgetHoldsAgainstSimulator(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{ProcessDelay: time.Hour})
	c := simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.Limiter = processes(t, 1, 1200, 2)[0] })
	ctx := natstest.Ctx(t)
	s, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			if _, err := c.GetJob(ctx, s.JobID, upstream.Class(i%2)); err != nil { // verify and poll queue; a submission would be refused
				t.Error(err)
			}
		})
	}
	wg.Wait()
	calls := append(sim.Calls(simulator.EndpointSubmit), sim.Calls(simulator.EndpointJob)...)
	slices.SortFunc(calls, func(a, b simulator.Call) int { return a.At.Compare(b.At) })
	for i := range calls {
		n := 0
		for _, c := range calls[i:] {
			if c.At.Sub(calls[i].At) >= time.Second {
				break
			}
			n++
		}
		if n > 20+2+1 {
			t.Fatalf("%d calls within one second from call %d", n, i)
		}
	}
}
