package upstream

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/evershield/bridge/internal/clock"
	"github.com/evershield/bridge/internal/retry"
)

// Back-off tuning for 429 answers.
const (
	backoffBase   = time.Second
	backoffCap    = 30 * time.Second // own back-off, when the upstream gave no header
	maxPause      = 5 * time.Minute  // sanity cap on the upstream's headers
	minFactor     = 1.0 / 16         // the rate never drops below 1/16 of RPM
	recoverFactor = 1.0 / 8          // each success restores 1/8 of the full rate
)

// waiter is one call queued for a token.
type waiter struct {
	class   Class
	elem    *list.Element
	ready   chan struct{}
	granted bool
}

// budget is the process-local [Limiter]: a token bucket with strict-priority FIFO queues and a 429 pause. Tokens are granted by
// dispatch, which runs whenever the state changes and on one timer armed for the next possible grant,
// so no waiter polls.
type budget struct {
	clock     clock.Clock
	unlimited bool
	rate      float64 // tokens per second at full speed
	burst     float64

	mu          sync.Mutex // mu guards the fields below
	tokens      float64
	last        time.Time // time tokens were last refilled; may lie in the future during a pause
	factor      float64   // fraction of rate in effect, (minFactor, 1], lowered by 429s
	pausedUntil time.Time
	strikes     int // consecutive 429s, for the own back-off
	queues      [numClasses]list.List
	waiting     int
	timer       clock.Timer
	timerGen    uint64
	wakeAt      time.Time
	onGrant     func(Class, time.Time) // test hook, called under mu
	// submitWait bounds a submission's wait before it is refused as busy; 0 means no bound.
	submitWait time.Duration
}

var _ Limiter = (*budget)(nil)

// Wait implements [Limiter]: wait, but a submission only up to submitWait, then a *BusyError.
func (b *budget) Wait(ctx context.Context, class Class) error {
	if class != ClassSubmit || b.submitWait <= 0 || b.unlimited {
		return b.wait(ctx, class)
	}
	wctx, cancel := context.WithTimeout(ctx, b.submitWait)
	defer cancel()
	err := b.wait(wctx, class)
	if err != nil && ctx.Err() == nil {
		b.mu.Lock()
		behind := float64(b.waiting+1) - b.tokens
		rate := b.rate * b.factor
		pause := max(0, b.pausedUntil.Sub(b.clock.Now()))
		b.mu.Unlock()
		return &BusyError{
			RetryAfter: pause + time.Duration(max(1, behind)/rate*float64(time.Second)),
			Reason:     fmt.Sprintf("no upstream request free for a submission within %v", b.submitWait),
		}
	}
	return err
}

// RateLimited implements [Limiter].
func (b *budget) RateLimited(hint time.Duration) time.Duration { return b.rateLimited(hint) }

// Succeeded implements [Limiter].
func (b *budget) Succeeded() { b.succeeded() }

// Available implements [Limiter].
func (b *budget) Available() float64 { return b.available() }

// Capacity implements [Limiter]: what is spendable now plus the refill over d at the current rate.
func (b *budget) Capacity(d time.Duration) float64 {
	if b.unlimited {
		return math.Inf(1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	b.refill(now)
	run := d - max(0, b.pausedUntil.Sub(now))
	return max(0, b.tokens) + max(0, run.Seconds())*b.rate*b.factor
}

func newBudget(rpm, burst int, c clock.Clock) *budget {
	b := &budget{clock: c, unlimited: rpm < 0, factor: 1}
	if !b.unlimited {
		b.rate = float64(rpm) / 60
		b.burst = float64(burst)
		b.tokens = b.burst
		b.last = c.Now()
	}
	return b
}

// refill adds the tokens earned since last.
func (b *budget) refill(now time.Time) {
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate*b.factor)
		b.last = now
	}
}

// wait blocks until the call may spend a token, or ctx ends (then the waiter leaves the queue and
// ctx.Err() is returned).
func (b *budget) wait(ctx context.Context, class Class) error {
	if b.unlimited {
		return nil
	}
	class = min(max(class, 0), numClasses-1)
	b.mu.Lock()
	now := b.clock.Now()
	b.refill(now)
	if b.waiting == 0 && !now.Before(b.pausedUntil) && b.tokens >= 1 {
		b.tokens--
		b.granted(class, now)
		b.mu.Unlock()
		return nil
	}
	if err := ctx.Err(); err != nil {
		b.mu.Unlock()
		return err
	}
	w := &waiter{class: class, ready: make(chan struct{})}
	w.elem = b.queues[class].PushBack(w)
	b.waiting++
	b.dispatch(now)
	b.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w.granted {
		// Granted while ctx ended: hand the token back to the next waiter.
		b.tokens = min(b.burst, b.tokens+1)
	} else {
		b.queues[class].Remove(w.elem)
		b.waiting--
	}
	b.dispatch(b.clock.Now())
	return ctx.Err()
}

func (b *budget) granted(c Class, now time.Time) {
	if b.onGrant != nil {
		b.onGrant(c, now)
	}
}

// dispatch grants tokens to waiters in class order and arms the timer for the next grant. Called
// with mu held.
func (b *budget) dispatch(now time.Time) {
	b.refill(now)
	for b.waiting > 0 {
		if now.Before(b.pausedUntil) {
			b.arm(now, b.pausedUntil.Sub(now))
			return
		}
		if b.tokens < 1 {
			need := (1 - b.tokens) / (b.rate * b.factor)
			b.arm(now, time.Duration(math.Ceil(need*float64(time.Second))))
			return
		}
		for c := range b.queues {
			if e := b.queues[c].Front(); e != nil {
				w := b.queues[c].Remove(e).(*waiter)
				b.waiting--
				b.tokens--
				w.granted = true
				close(w.ready)
				b.granted(w.class, now)
				break
			}
		}
	}
}

// arm makes sure dispatch runs again no later than now+d. Called with mu held.
func (b *budget) arm(now time.Time, d time.Duration) {
	at := now.Add(d)
	if b.timer != nil {
		if !at.Before(b.wakeAt) {
			return
		}
		b.timer.Stop()
	}
	b.timerGen++
	gen := b.timerGen
	b.wakeAt = at
	b.timer = b.clock.AfterFunc(d, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if gen != b.timerGen {
			return // superseded by a later arm
		}
		b.timer = nil
		b.dispatch(b.clock.Now())
	})
}

// rateLimited pauses the budget after a 429 and halves its rate. hint is the wait the upstream asked
// for (0 = none). It returns the pause applied.
func (b *budget) rateLimited(hint time.Duration) time.Duration {
	if b.unlimited {
		return hint
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	b.refill(now)
	d := min(hint, maxPause)
	if d <= 0 {
		d = retry.Exp(b.strikes+1, backoffBase, backoffCap)
		d = time.Duration(float64(d) * (0.5 + rand.Float64()/2))
	}
	// Answers to calls already in flight when the first 429 came are no new evidence: only the first
	// 429 of a pause lowers the rate and lengthens the next back-off.
	if !now.Before(b.pausedUntil) {
		b.strikes++
		b.factor = max(b.factor/2, minFactor)
	}
	if until := now.Add(d); until.After(b.pausedUntil) {
		b.pausedUntil = until
	}
	// After the pause exactly one call probes; the rest refill at the lowered rate.
	b.tokens = min(b.tokens, 1)
	b.last = b.pausedUntil
	b.dispatch(now)
	return d
}

// succeeded restores the rate step by step after 429s.
func (b *budget) succeeded() {
	if b.unlimited {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.factor >= 1 && b.strikes == 0 {
		return
	}
	b.refill(b.clock.Now())
	b.strikes = 0
	b.factor = min(1, b.factor+recoverFactor)
}

// available is the number of tokens spendable now; +Inf when unlimited.
func (b *budget) available() float64 {
	if b.unlimited {
		return math.Inf(1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	if now.Before(b.pausedUntil) {
		return 0
	}
	b.refill(now)
	return b.tokens
}
