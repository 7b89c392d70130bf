package verify

import (
	"context"
	"math"
	"sync"
	"time"
)

// Bounds of the adaptive concurrency limit (Config.Concurrency 0); see [limiter].
const (
	// adaptiveInitial is where the limit starts: the old fixed default.
	adaptiveInitial = 64
	// adaptiveMin is the floor the limit never shrinks below, however slow the upstream or its budget:
	// the old fixed default, so adapting never does worse than it. Latency is a noisy signal on a busy
	// machine (CPU starvation by other processes looks like a slow upstream); a lower floor let a run on
	// a loaded 2-core box fall to a tenth of its throughput.
	adaptiveMin = 64
	// adaptiveMax is the ceiling; MaxAckPending/2 lowers it.
	adaptiveMax = 1024
	// latencyTolerance is how far a window's mean upstream latency may rise above the baseline before
	// the limit shrinks: more handlers no longer run in parallel, they queue (for the budget, or at an
	// upstream that slows down under load).
	latencyTolerance = 1.5
	// holdWindows is how many windows the limit holds after a growth that bought no throughput.
	holdWindows = 4
	// minWindow is the fewest handlers finished in one window.
	minWindow = 16
	// baselineDrift is the share of the gap by which the baseline moves up towards a higher window mean,
	// so a lasting change of the upstream's latency becomes the new baseline (over about 64 windows).
	baselineDrift = 64
)

// limiter bounds how many handlers of a lane run at once. With min == max it is a plain semaphore.
// Otherwise its limit adapts between min and max, in windows of at least max(minWindow, limit) finished
// handlers (about one round of the whole limit):
//
//   - more than half the window's mean upstream latency was the wait for budget: the budget, not the
//     upstream, is the bottleneck, and it grants calls at its own rate however many handlers queue for
//     it; the limit halves, down to min, and the window does not move the baseline (latency that grows
//     with the queue must not become the norm, or the limit would creep up to max while every handler
//     only waits);
//   - the window's mean upstream latency (GET /job, the wait for budget included) above
//     latencyTolerance × the baseline: the upstream or its budget is the bottleneck, and more handlers
//     would only queue; the limit shrinks in proportion, by at most half (multiplicative decrease);
//   - fewer than half the limit in flight at the window's peak: there is not enough work to learn
//     anything, the limit holds (so a quiet period does not inflate it);
//   - the last growth did not raise throughput (handlers finished per second) at all: the bottleneck is
//     elsewhere (CPU, NATS), so the limit holds for holdWindows windows before probing again;
//   - else the limit grows: it doubles until the first window that shrinks or holds it (slow start, so
//     a backlog finds its level within a few round trips: 64 to 1024 in 4 windows), and from then on
//     grows by max(√limit, limit/4) a window.
//
// The baseline is the lowest window mean seen, drifting up by 1/baselineDrift of the gap each window.
// Only handlers that called the upstream carry a latency sample; the rest count towards throughput.
// It is safe for concurrent use.
type limiter struct {
	now      func() time.Time
	min, max int

	mu       sync.Mutex // mu guards everything below
	limit    float64
	inFlight int
	// wake is closed and replaced whenever a slot may have opened, to wake a blocked acquire.
	wake chan struct{}

	// The current window.
	winStart   time.Time
	winDone    int           // handlers finished
	winSampled int           // of which called the upstream
	winLatency time.Duration // the sum of their upstream latencies
	winWait    time.Duration // the part of winLatency spent waiting for budget
	winPeak    int           // most handlers in flight at once

	baseline time.Duration // 0 until the first window with samples
	lastRate float64       // handlers finished per second in the last window
	grew     bool          // the last window grew the limit
	hold     int           // windows left to hold after a growth that bought nothing
	settled  bool          // slow start is over: a window shrank or held the limit
}

// newLimiter returns a limiter starting at initial, adapting between lo and hi (fixed when lo == hi).
func newLimiter(initial, lo, hi int, now func() time.Time) *limiter {
	return &limiter{now: now, min: lo, max: hi, limit: float64(min(max(initial, lo), hi)),
		wake: make(chan struct{}), winStart: now()}
}

// fixedLimiter is a plain semaphore of n slots.
func fixedLimiter(n int) *limiter { return newLimiter(n, n, n, time.Now) }

// Limit is the current limit.
func (l *limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.limit)
}

// acquire takes a slot, waiting while the limit is reached; it fails only when ctx ends first.
func (l *limiter) acquire(ctx context.Context) error {
	for {
		l.mu.Lock()
		if l.inFlight < int(l.limit) {
			l.inFlight++
			l.winPeak = max(l.winPeak, l.inFlight)
			l.mu.Unlock()
			return nil
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release gives a slot back with the handler's upstream call time: how long the call took, budget wait
// included, and the part of it spent waiting for budget; zero when it made none.
func (l *limiter) release(call callTime) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	if l.min != l.max {
		l.winDone++
		if call.latency > 0 {
			l.winSampled++
			l.winLatency += call.latency
			l.winWait += min(call.budgetWait, call.latency)
		}
		if l.winDone >= max(minWindow, int(l.limit)) {
			l.endWindow()
		}
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// endWindow adapts the limit to what the window saw, and starts the next one. mu is held.
func (l *limiter) endWindow() {
	now := l.now()
	elapsed := now.Sub(l.winStart)
	done, sampled, sum, wait, peak := l.winDone, l.winSampled, l.winLatency, l.winWait, l.winPeak
	l.winStart, l.winDone, l.winSampled, l.winLatency, l.winWait, l.winPeak = now, 0, 0, 0, 0, l.inFlight
	if sampled == 0 || elapsed <= 0 {
		return // no upstream call (or no time passed): nothing learned
	}
	if 2*wait > sum {
		l.limit = max(float64(l.min), l.limit/2)
		l.hold, l.settled, l.grew = 0, true, false
		return
	}
	rate := float64(done) / elapsed.Seconds()
	mean := sum / time.Duration(sampled)
	switch {
	case l.baseline == 0 || mean < l.baseline:
		l.baseline = mean
	default:
		l.baseline += (mean - l.baseline) / baselineDrift
	}
	grew := false
	switch {
	case float64(mean) > latencyTolerance*float64(l.baseline):
		l.limit = max(float64(l.min), l.limit*max(0.5, latencyTolerance*float64(l.baseline)/float64(mean)))
		l.hold, l.settled = 0, true
	case peak*2 < int(l.limit):
		// Not enough work to tell.
	case l.grew && rate <= l.lastRate:
		l.hold, l.settled = holdWindows, true
	case l.hold > 0:
		l.hold--
	case !l.settled:
		l.limit = min(float64(l.max), 2*l.limit)
		grew = true
	default:
		l.limit = min(float64(l.max), l.limit+max(math.Sqrt(l.limit), l.limit/4))
		grew = true
	}
	l.grew, l.lastRate = grew, rate
}
