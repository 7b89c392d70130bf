package verify

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Defaults of the unknown-job budget and its slow lane (see [Verifier]).
const (
	// DefaultUnknownRPM is the default budget for verifying webhooks of jobs without a JOBS record: a tenth
	// of the upstream's documented 60 requests per minute.
	DefaultUnknownRPM = 6
	// UnknownOff as Config.UnknownRPM never verifies a webhook whose job has no JOBS record: it is
	// dead-lettered with reason unknown_job without an upstream call, and the slow lane is not run, so it
	// stays in DEADLETTER for an operator to redrive.
	UnknownOff = -1
)

// tokenBucket is a token bucket on the monotonic clock with two ways to spend: take, which never waits
// and fails while anyone is waiting, and wait, which reserves the next token in arrival order (the
// balance may go negative: that is the queue). Over any window W at most burst + rate×W tokens are
// spent either way. It is safe for concurrent use.
type tokenBucket struct {
	rate  float64 // tokens per second
	burst float64

	mu      sync.Mutex // mu guards tokens, last and waiting
	tokens  float64
	last    time.Time
	waiting int
}

func newTokenBucket(perMinute, burst int) *tokenBucket {
	return &tokenBucket{rate: float64(perMinute) / 60, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// advanceLocked adds the tokens earned since the last call.
func (b *tokenBucket) advanceLocked(now time.Time) {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
}

// take spends a token if one is free now. A token reserved by a waiter is not free, so take fails while
// the slow lane is queueing for the budget: the lane, which holds the older webhooks, goes first.
func (b *tokenBucket) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advanceLocked(time.Now())
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// wait reserves a token and waits until it is due, or until ctx is done; then it gives the token back
// and returns ctx's error. onWaiting, if set, is called (under the bucket's lock, so in order) with the
// number of waiters when it changes.
func (b *tokenBucket) wait(ctx context.Context, onWaiting func(int)) error {
	b.mu.Lock()
	b.advanceLocked(time.Now())
	b.tokens--
	if b.tokens >= 0 {
		b.mu.Unlock()
		return nil
	}
	d := time.Duration(-b.tokens / b.rate * float64(time.Second))
	b.waiting++
	if onWaiting != nil {
		onWaiting(b.waiting)
	}
	b.mu.Unlock()

	t := time.NewTimer(d)
	defer t.Stop()
	var err error
	select {
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	b.mu.Lock()
	if err != nil {
		// The reservation is not used: give it back. Later reservations keep their (now pessimistic)
		// due times, so the bound holds.
		b.advanceLocked(time.Now())
		b.tokens = min(b.burst, b.tokens+1)
	}
	b.waiting--
	if onWaiting != nil {
		onWaiting(b.waiting)
	}
	b.mu.Unlock()
	return err
}

// admitUnknown decides whether the webhook of a job without a JOBS record may spend an upstream call
// now; see [Verifier]. When it may not, it returns the verdict: on the main lane a move to the slow lane
// (or a dead letter unknown_job when the budget is off), on the slow lane a give-back because the
// verifier is stopping.
func (v *Verifier) admitUnknown(d delivery) (verdict, bool) {
	if v.unknownBudget == nil {
		return deadLetter(ReasonUnknownJob, outcomeUnknownShed, errUnknownOff), false
	}
	if !d.lane.slow {
		if v.unknownBudget.take() {
			return verdict{}, true
		}
		// No token free now: the webhook leaves the main consumer (no delayed nak holding a place in
		// its MaxAckPending) and queues durably in the slow lane, which waits for the budget.
		return deadLetter(ReasonUnknownJob, outcomeUnknownLaned, errUnknownBusy), false
	}
	// The slow lane waits for its token instead of nak-looping; the handler keeps signalling progress,
	// and the wait counts neither as an attempt nor against HandlerTimeout. Only a shutdown ends it.
	if err := v.unknownBudget.wait(d.stop, func(n int) { v.metrics.unknownWaiting.Set(float64(n)) }); err != nil {
		return verdict{action: actGiveBack, outcome: outcomeShutdown}, false
	}
	return verdict{}, true
}

var (
	errUnknownOff  = errors.New("unknown-job verification is off")
	errUnknownBusy = errors.New("the unknown-job budget has no call free now")
)
