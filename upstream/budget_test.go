package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 5, 19, 12, 0, 0, 0, time.UTC)

// waitUntil polls cond (no clock involved: it waits for goroutines to reach the queue).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached within 10s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func total(q [numClasses]int) int { return q[0] + q[1] + q[2] }

// TestBudgetNeverExceedsRatePlusBurst runs 200 contending callers on a manual clock and checks that no
// window of the recorded grants holds more than burst + rate×window.
func TestBudgetNeverExceedsRatePlusBurst(t *testing.T) {
	const n, rpm, burst = 200, 60, 5
	clk := NewFakeClock(t0)
	b := newBudget(rpm, burst, clk)
	var mu sync.Mutex
	var grants []time.Time
	b.onGrant = func(_ Class, at time.Time) {
		mu.Lock()
		grants = append(grants, at)
		mu.Unlock()
	}
	granted := func() int { mu.Lock(); defer mu.Unlock(); return len(grants) }

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := b.wait(ctx, Class(i%3)); err != nil {
				t.Errorf("wait: %v", err)
			}
		})
	}
	waitUntil(t, "all callers queued or served", func() bool { return total(b.queued())+granted() == n })
	for granted() < n && ctx.Err() == nil {
		clk.Advance(100 * time.Millisecond)
	}
	wg.Wait()

	slices.SortFunc(grants, func(a, b time.Time) int { return a.Compare(b) })
	for _, w := range []time.Duration{time.Second, 10 * time.Second, time.Minute} {
		limit := burst + int(float64(rpm)/60*w.Seconds())
		for i, start := range grants {
			in := 0
			for _, g := range grants[i:] {
				if g.Sub(start) >= w {
					break
				}
				in++
			}
			if in > limit {
				t.Fatalf("%d grants in the %v window from %v, limit %d", in, w, start.Sub(t0), limit)
			}
		}
	}
	if got, want := grants[n-1].Sub(t0), time.Duration(n-burst)*time.Second; got < want {
		t.Fatalf("last grant at +%v, want at least +%v", got, want)
	}
}

// TestBudgetFinishesBeforeItStarts queues a submit, then polls, then a verify, and checks the order of
// service when one token comes per second: accepted work first (verify, then the polls FIFO), the new
// submission last.
func TestBudgetFinishesBeforeItStarts(t *testing.T) {
	clk := NewFakeClock(t0)
	b := newBudget(60, 1, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.wait(ctx, ClassPoll); err != nil { // spend the only token
		t.Fatal(err)
	}
	done := make(chan string, 8)
	enqueue := func(name string, c Class) {
		before := total(b.queued())
		go func() {
			if err := b.wait(ctx, c); err != nil {
				done <- "error: " + err.Error()
				return
			}
			done <- name
		}()
		waitUntil(t, name+" queued", func() bool { return total(b.queued()) == before+1 })
	}
	enqueue("submit", ClassSubmit)
	enqueue("poll1", ClassPoll)
	enqueue("poll2", ClassPoll)
	enqueue("poll3", ClassPoll)
	enqueue("verify", ClassVerify)

	for _, want := range []string{"verify", "poll1", "poll2", "poll3", "submit"} {
		clk.Advance(time.Second)
		select {
		case got := <-done:
			if got != want {
				t.Fatalf("served %s, want %s", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("%s not served", want)
		}
	}
}

func TestBudgetCancelledWaiterLeavesQueue(t *testing.T) {
	clk := NewFakeClock(t0)
	b := newBudget(60, 1, clk)
	bg, cancelAll := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelAll()
	if err := b.wait(bg, ClassSubmit); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	errc := make(chan error, 1)
	go func() { errc <- b.wait(ctx, ClassSubmit) }()
	waitUntil(t, "queued", func() bool { return total(b.queued()) == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("wait = %v, want context.Canceled", err)
	}
	if q := total(b.queued()); q != 0 {
		t.Fatalf("%d still queued", q)
	}
	// The token the cancelled waiter would have had is still there for the next one.
	clk.Advance(time.Second)
	if got := b.available(); got < 1 {
		t.Fatalf("available %v after 1s, want 1", got)
	}
}

func TestBudgetPauseAndRecovery(t *testing.T) {
	clk := NewFakeClock(t0)
	b := newBudget(60, 5, clk)
	if got := b.rateLimited(7 * time.Second); got != 7*time.Second {
		t.Fatalf("pause %v, want 7s", got)
	}
	if a := b.available(); a != 0 {
		t.Fatalf("available during pause = %v", a)
	}
	clk.Advance(7 * time.Second)
	if a := b.available(); a != 1 {
		t.Fatalf("available after pause = %v, want one probe token", a)
	}
	if b.factor != 0.5 {
		t.Fatalf("factor %v after one 429, want 0.5", b.factor)
	}
	// A second 429 of the same pause (a call already in flight) does not halve again.
	b.rateLimited(0)
	b.mu.Lock()
	f := b.factor
	b.mu.Unlock()
	if f != 0.25 {
		t.Fatalf("factor %v after a 429 past the pause, want 0.25", f)
	}
	b.rateLimited(time.Second)
	if b.factor != 0.25 {
		t.Fatalf("factor %v after a 429 within the pause, want unchanged 0.25", b.factor)
	}
	for range 6 {
		b.succeeded()
	}
	if b.factor != 1 {
		t.Fatalf("factor %v after 6 successes, want 1", b.factor)
	}
}

func TestBackoffWithoutHeaderIsCapped(t *testing.T) {
	b := newBudget(60, 5, NewFakeClock(t0))
	for i := range 12 {
		b.mu.Lock()
		b.pausedUntil = time.Time{} // every 429 a fresh one
		b.mu.Unlock()
		d := b.rateLimited(0)
		lo := min(time.Second<<i, 30*time.Second) / 2
		if d < lo || d > 30*time.Second {
			t.Fatalf("strike %d: back-off %v, want in [%v, 30s]", i, d, lo)
		}
	}
}

func TestRetryHint(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		hdr  map[string]string
		want time.Duration
	}{
		{"none", nil, 0},
		{"retry-after seconds", map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"retry-after date", map[string]string{"Retry-After": now.Add(90 * time.Second).UTC().Format(http.TimeFormat)}, 89 * time.Second},
		{"reset seconds", map[string]string{"X-Ratelimit-Reset": "12"}, 12 * time.Second},
		{"reset epoch", map[string]string{"X-Ratelimit-Reset": fmt.Sprint(now.Add(20 * time.Second).Unix())}, 18 * time.Second},
		{"retry-after wins", map[string]string{"Retry-After": "3", "X-Ratelimit-Reset": "12"}, 3 * time.Second},
		{"junk", map[string]string{"Retry-After": "soon"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.hdr {
				h.Set(k, v)
			}
			got := retryHint(h, now)
			// Dates have whole-second precision: accept up to 2s above want.
			if got < tt.want || got > tt.want+2*time.Second || (tt.want == 0 && got != 0) {
				t.Fatalf("retryHint = %v, want ~%v", got, tt.want)
			}
		})
	}
}
