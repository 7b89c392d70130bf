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
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream"
)

// processes starts n budgets on one NATS server, each with its own connection, as n bridge processes
// would be.
func processes(t *testing.T, n, rpm, burst int) []*budget.Shared {
	t.Helper()
	return startProcesses(t, n, func(int) budget.Config {
		return budget.Config{RPM: rpm, Burst: burst, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
	})
}

// startProcesses starts n budgets on one NATS server, each with its own connection; mk gives process i's
// configuration, and KV and Instance are filled in here.
func startProcesses(t *testing.T, n int, mk func(i int) budget.Config) []*budget.Shared {
	t.Helper()
	w := testworld.New(t)
	var out []*budget.Shared
	for i := range n {
		_, pjs := w.Connect()
		kv, err := pjs.KeyValue(natstest.CtxWithin(t, 10*time.Second), "BRIDGE_BUDGET")
		if err != nil {
			t.Fatal(err)
		}
		cfg := mk(i)
		cfg.KV, cfg.Instance = kv, string(rune('a'+i))
		out = append(out, testworld.StartBudget(t, cfg))
	}
	return out
}

// checkWindows fails when any window w of the sorted times holds more than burst + rpm×w.
func checkWindows(t *testing.T, at []time.Time, rpm, burst int, windows ...time.Duration) {
	t.Helper()
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	for _, w := range windows {
		limit := burst + int(float64(rpm)/60*w.Seconds())
		most := 0
		for i := range at {
			in := 0
			for _, u := range at[i:] {
				if u.Sub(at[i]) >= w {
					break
				}
				in++
			}
			most = max(most, in)
		}
		t.Logf("window %v: at most %d calls, limit %d", w, most, limit)
		if most > limit {
			t.Fatalf("%d calls in a %v window; limit burst+rate×w = %d", most, w, limit)
		}
	}
}

// TestSharedBudgetHoldsAcrossProcesses: three processes with far more callers than the budget, all
// granted calls together stay within Burst + RPM×W for every window, and the busy ones get what is there
// (each process gets calls, and the total reaches the rate).
func TestSharedBudgetHoldsAcrossProcesses(t *testing.T) {
	const rpm, burst, callers = 1200, 10, 90 // 20/s
	bs := processes(t, 3, rpm, burst)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var grants []time.Time
	per := make([]int, len(bs))
	start := time.Now()
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			b := bs[i%len(bs)]
			class := []upstream.Class{upstream.ClassVerify, upstream.ClassPoll}[i%2]
			if err := b.Wait(ctx, class); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			grants = append(grants, time.Now())
			per[i%len(bs)]++
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(start)
	checkWindows(t, grants, rpm, burst, 500*time.Millisecond, time.Second, 2*time.Second)
	// 90 calls at 20/s after a burst of 10 need 4s; the lower bound of the time taken is the contract,
	// the upper is only a sanity check that the processes did not starve.
	if took < 3500*time.Millisecond {
		t.Fatalf("90 calls in %v; the budget allows them no sooner than 4s", took)
	}
	t.Logf("90 calls in %v, per process %v", took, per)
}

// TestIdleProcessShareGoesToBusyOne: one process alone gets the whole rate; there are no fixed shares.
func TestIdleProcessShareGoesToBusyOne(t *testing.T) {
	const rpm, burst = 1200, 10
	bs := processes(t, 3, rpm, burst)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := bs[0].Wait(ctx, upstream.ClassVerify); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// 50 calls = burst capacity (9) plus 41 at 20/s = about 2s; a third of the rate would take 6s.
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("50 calls on one process took %v; the idle processes' share did not reach it", took)
	}
}

// TestRateLimitPausesEveryProcess: a 429 reported by one process stops the others until the pause ends.
func TestRateLimitPausesEveryProcess(t *testing.T) {
	bs := processes(t, 2, 600, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const pause = 2 * time.Second
	paused := time.Now()
	if d := bs[0].RateLimited(pause); d != pause {
		t.Fatalf("pause %v, want %v", d, pause)
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if !bs[1].Snapshot().Paused(time.Now()) {
			return errors.New("the other process has not seen the pause")
		}
		return nil
	})
	if err := bs[1].Wait(ctx, upstream.ClassVerify); err != nil {
		t.Fatal(err)
	}
	if got := time.Since(paused); got < pause {
		t.Fatalf("the other process called %v after the 429; the pause was %v", got, pause)
	}
}

// TestSubmissionRefusedFastWhileAcceptedWorkWaits: with verifications queued for the whole budget, a
// submission is refused as busy within SubmitWait, with a Retry-After, and never waits behind them.
func TestSubmissionRefusedFastWhileAcceptedWorkWaits(t *testing.T) {
	bs := processes(t, 2, 60, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vctx, stopVerifies := context.WithCancel(ctx)
	defer stopVerifies()
	for range 20 {
		go func() { _ = bs[0].Wait(vctx, upstream.ClassVerify) }()
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		if bs[0].Snapshot().Level >= 1 {
			return errors.New("verifications have not drained the bucket yet")
		}
		return nil
	})
	start := time.Now()
	err := bs[1].Wait(ctx, upstream.ClassSubmit)
	took := time.Since(start)
	be, ok := errors.AsType[*upstream.BusyError](err)
	if !ok {
		t.Fatalf("submission: %v, want a BusyError", err)
	}
	if took > 2*time.Second {
		t.Fatalf("refusal took %v; the contract says within 2s", took)
	}
	if be.RetryAfterSeconds() < 1 {
		t.Fatalf("Retry-After %d", be.RetryAfterSeconds())
	}
	t.Logf("refused in %v: %v", took, err)
}
