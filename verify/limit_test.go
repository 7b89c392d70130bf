package verify

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/clock"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream/simulator"
)

// cycle runs n handlers through l at once: all acquire, the clock moves by took, all release with the
// upstream call time call.
func cycle(t *testing.T, l *limiter, clk *clock.Fake, n int, took time.Duration, call callTime) {
	t.Helper()
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // acquire must not wait: the slot is free or the test is wrong
		if err := l.acquire(ctx); err != nil {
			t.Fatalf("acquire %d of %d at limit %d: %v", i+1, n, l.Limit(), err)
		}
	}
	clk.Advance(took)
	for range n {
		l.release(call)
	}
}

// saturated runs one window with the whole limit in flight, taking took, and returns the new limit.
func saturated(t *testing.T, l *limiter, clk *clock.Fake, took, lat time.Duration) int {
	t.Helper()
	return saturatedCall(t, l, clk, took, callTime{latency: lat})
}

// saturatedCall is saturated with a whole call time, budget wait included.
func saturatedCall(t *testing.T, l *limiter, clk *clock.Fake, took time.Duration, call callTime) int {
	t.Helper()
	cycle(t, l, clk, l.Limit(), took, call)
	return l.Limit()
}

func TestLimiterFixedIsASemaphore(t *testing.T) {
	l := fixedLimiter(3)
	cycle(t, l, clock.NewFake(time.Unix(0, 0)), 3, 0, callTime{latency: time.Second})
	for range 3 {
		if err := l.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("fourth acquire of 3 slots: %v, want context.Canceled", err)
	}
	l.release(callTime{latency: time.Hour}) // a fixed limiter learns nothing
	if err := l.acquire(ctx); err != nil {
		t.Fatalf("acquire after a release: %v", err)
	}
	if got := l.Limit(); got != 3 {
		t.Fatalf("limit %d, want 3", got)
	}
}

func TestLimiterReleaseWakesAcquire(t *testing.T) {
	l := fixedLimiter(1)
	if err := l.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- l.acquire(context.Background()) }()
	l.release(callTime{})
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("acquire still waiting 10s after a release")
	}
}

// While the upstream's latency stays flat and throughput rises with the limit (a 50 ms upstream with no
// budget: each window of the whole limit takes 50 ms), the limit doubles from 64 to the ceiling (slow
// start). Once a window has shrunk it (here one at 100 ms), it grows by a quarter a window instead.
func TestLimiterGrowsWhileLatencyFlatAndThroughputRises(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	l := newLimiter(64, 16, 1024, clk.Now)
	var got []int
	for range 5 {
		got = append(got, saturated(t, l, clk, 50*time.Millisecond, 50*time.Millisecond))
	}
	if want := []int{128, 256, 512, 1024, 1024}; !slices.Equal(got, want) {
		t.Fatalf("slow start: limits %v, want %v", got, want)
	}

	l, got = newLimiter(64, 16, 1024, clk.Now), nil
	for _, lat := range []time.Duration{50, 100, 50, 50, 50, 50} {
		got = append(got, saturated(t, l, clk, 50*time.Millisecond, lat*time.Millisecond))
	}
	// 64×2; 128×(1.5×50.78/100) = 97.5; then +¼ a window: 121.9, 152.3, 190.4, 238.0.
	if want := []int{128, 97, 121, 152, 190, 238}; !slices.Equal(got, want) {
		t.Fatalf("after slow start: limits %v, want %v", got, want)
	}
}

// When the upstream's latency rises (its budget queues the calls, or it slows down under load), the
// limit shrinks in proportion, at most by half a window, and never below the floor.
func TestLimiterShrinksWhenLatencyRises(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	l := newLimiter(64, 16, 1024, clk.Now)
	var got []int
	for _, lat := range []time.Duration{50, 100, 400, 400, 400} {
		got = append(got, saturated(t, l, clk, lat*time.Millisecond, lat*time.Millisecond))
	}
	// Baselines 50, 50.78, 56.24 and 61.61 ms: 64×2; 128×(1.5×50.78/100) = 97.5; then halved (the most
	// a window takes): 48.75, 24.4, and the floor.
	want := []int{128, 97, 48, 24, 16}
	if !slices.Equal(got, want) {
		t.Fatalf("limits %v, want %v", got, want)
	}
}

// Behind a saturated budget (100 calls/s, calls of 50 ms) every handler queues for the budget, so the
// latency grows with the limit. The limit falls to the floor and stays there while the budget is the
// bottleneck: without that rule the baseline drifted up with the queue and the limit crept to its
// ceiling (987 after 200 windows from 64, each handler waiting 10 s for the budget). Once the budget has
// room again, the limit grows.
func TestLimiterFallsToFloorWhileBudgetBound(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	l := newLimiter(256, 64, 1024, clk.Now)
	var got []int
	for range 300 {
		queued := time.Duration(l.Limit()) * 10 * time.Millisecond
		got = append(got, saturatedCall(t, l, clk, queued, callTime{latency: queued, budgetWait: queued - 50*time.Millisecond}))
	}
	if !slices.Equal(got[:3], []int{128, 64, 64}) || slices.Max(got[2:]) != 64 {
		t.Fatalf("limits %v..., highest after the fall %d; want 128, 64, then 64 throughout", got[:3], slices.Max(got[2:]))
	}
	got = nil
	for range 3 {
		got = append(got, saturated(t, l, clk, 50*time.Millisecond, 50*time.Millisecond))
	}
	// The first window with room sets the baseline (budget-bound windows set none) and grows by a quarter.
	if want := []int{80, 100, 125}; !slices.Equal(got, want) {
		t.Fatalf("with room again: limits %v, want %v", got, want)
	}
}

// A growth that buys no throughput (the bottleneck is elsewhere: each window of the limit takes
// proportionally longer, 1,000 handlers a second whatever the limit) ends slow start and holds the limit
// for 4 windows before it probes again, by a quarter.
func TestLimiterHoldsWhenThroughputStopsRising(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	l := newLimiter(64, 16, 1024, clk.Now)
	var got []int
	for range 12 {
		took := time.Duration(l.Limit()) * time.Millisecond
		got = append(got, saturated(t, l, clk, took, 50*time.Millisecond))
	}
	want := []int{128, 128, 128, 128, 128, 128, 160, 160, 160, 160, 160, 160}
	if !slices.Equal(got, want) {
		t.Fatalf("limits %v, want %v", got, want)
	}
}

// With fewer than half the limit in flight there is not enough work to learn from: a quiet period does
// not inflate the limit. Windows without an upstream call teach nothing either.
func TestLimiterHoldsWhenIdleOrWithoutSamples(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	l := newLimiter(64, 16, 1024, clk.Now)
	for range 5 * 8 { // 5 windows of 64, 8 in flight at a time
		cycle(t, l, clk, 8, 50*time.Millisecond, callTime{latency: 50 * time.Millisecond})
	}
	if got := l.Limit(); got != 64 {
		t.Fatalf("after 5 windows of 8 in flight: limit %d, want 64", got)
	}
	for range 3 {
		saturated(t, l, clk, 50*time.Millisecond, 0)
	}
	if got := l.Limit(); got != 64 {
		t.Fatalf("after 3 windows without upstream calls: limit %d, want 64", got)
	}
}

// TestConcurrencyAdaptsByDefault: Concurrency 0 is the adaptive limit (64 to start, 64 to
// min(1024, MaxAckPending/2)) with MaxAckPending 2048; a positive Concurrency is fixed, and a negative
// one is refused.
func TestConcurrencyAdaptsByDefault(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	tests := []struct {
		name                               string
		concurrency, maxAckPending         int
		wantMAP, wantStart, wantLo, wantHi int
		wantErr                            error
	}{
		{"adaptive", 0, 0, 2048, 64, 64, 1024, nil},
		{"adaptive under a small MaxAckPending", 0, 200, 200, 64, 64, 100, nil},
		{"fixed", 8, 0, 1000, 8, 8, 8, nil},
		{"fixed large", 100, 0, 3200, 100, 100, 100, nil},
		{"negative", -1, 0, 0, 0, 0, 0, ErrInvalidConfig},
		{"MaxAckPending under twice the floor", 0, 127, 0, 0, 0, 0, ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := New(Config{JS: e.JS, API: e.API, Deliverer: e.Deliverer, Concurrency: tt.concurrency, MaxAckPending: tt.maxAckPending,
				UnknownRPM: UnknownOff})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("New = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			l := v.lanes()[0].limit
			if v.cfg.MaxAckPending != tt.wantMAP || l.Limit() != tt.wantStart || l.min != tt.wantLo || l.max != tt.wantHi {
				t.Fatalf("MaxAckPending %d, limit %d in [%d, %d]; want %d, %d in [%d, %d]", v.cfg.MaxAckPending, l.Limit(),
					l.min, l.max, tt.wantMAP, tt.wantStart, tt.wantLo, tt.wantHi)
			}
		})
	}
}
