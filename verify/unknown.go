package verify

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/upstream"
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

// unknownTokens is the unknown-job budget: the process-local [tokenBucket], or, with
// Config.UnknownLimiter, the account-wide one every process shares (BRIDGE_BUDGET key unknown).
type unknownTokens interface {
	// take spends a token if one is free now.
	take() bool
	// wait waits in line for a token, or until ctx ends.
	wait(ctx context.Context, onWaiting func(int)) error
	// eta is about how long until a token is free.
	eta() time.Duration
	// perSecond is the budget's rate.
	perSecond() float64
}

var _ unknownTokens = (*tokenBucket)(nil)

// perSecond implements unknownTokens.
func (b *tokenBucket) perSecond() float64 { return b.rate }

// sharedTokens is the unknown-job budget of the whole account: a shared budget (budget.Shared) every
// verifier process leases from, so N processes spend UnknownRPM between them, not N times it.
type sharedTokens struct {
	lim  upstream.Limiter
	rate float64
}

// takeWait bounds take: a lease is one NATS round trip, granted at once when the bucket has a token.
const takeWait = 50 * time.Millisecond

func (t sharedTokens) take() bool {
	ctx, cancel := context.WithTimeout(context.Background(), takeWait)
	defer cancel()
	return t.lim.Wait(ctx, upstream.ClassVerify) == nil
}

func (t sharedTokens) wait(ctx context.Context, _ func(int)) error {
	return t.lim.Wait(ctx, upstream.ClassVerify)
}

func (t sharedTokens) eta() time.Duration {
	if avail := t.lim.Available(); avail < 1 {
		return time.Duration((1 - avail) / t.rate * float64(time.Second))
	}
	return 0
}

func (t sharedTokens) perSecond() float64 { return t.rate }

// eta is how long until a token is free, for a caller that will not wait in line.
func (b *tokenBucket) eta() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advanceLocked(time.Now())
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// admitUnknown decides whether the webhook of a job without a JOBS record may spend an upstream call
// now, and from which budget; see [Verifier]. Provenance first: a webhook that carried the configured
// token or a valid signature, or whose id the account's job list holds, is verified at the full budget
// (its job then gets a record). Any other spends the unknown-job budget: at once when a token is free;
// else on the main lane it moves to the slow lane, and on the slow lane it is parked (a delayed nak that
// frees the worker and spends no attempt) until a token is likely free. When it may not go on, it returns
// the verdict.
func (v *Verifier) admitUnknown(ctx context.Context, d delivery) (verdict, bool) {
	if d.msg.Headers().Get(contract.HeaderAuthenticated) != "" {
		return verdict{}, true
	}
	if v.unknownBudget == nil {
		return deadLetter(ReasonUnknownJob, outcomeUnknownShed, errUnknownOff), false
	}
	if !d.lane.slow {
		if v.unknownBudget.take() {
			return verdict{}, true
		}
		// No token free now: the webhook leaves the main consumer (no delayed nak holding a place in
		// its MaxAckPending) and queues durably in the slow lane, which checks the account's list.
		return deadLetter(ReasonUnknownJob, outcomeUnknownLaned, errUnknownBusy), false
	}
	returning := v.lists.missing.Has(d.id)
	if returning && v.parked.Add(-1) < 0 {
		v.parked.Store(0)
	}
	found, err := v.lists.found(ctx, d.id, d.receivedAt)
	switch {
	case err != nil && d.stop.Err() != nil:
		return verdict{action: actGiveBack, outcome: outcomeShutdown}, false
	case err != nil:
		return retryLater("check the account's job list", err), false
	case found:
		v.metrics.provenance.WithLabelValues("list").Inc()
		return verdict{}, true
	case v.unknownBudget.take():
		return verdict{}, true
	}
	// Forged, or older than the list's window: wait for the unknown-job budget without holding a worker,
	// spread over the time the budget needs for all the parked ones, so they do not all come back at once.
	backlog := time.Duration(float64(v.parked.Add(1)) / v.unknownBudget.perSecond() * float64(time.Second))
	wait := v.unknownBudget.eta() + time.Duration(rand.Int64N(int64(max(backlog, time.Second))))
	return verdict{action: actRetry, outcome: outcomeUnknownWaiting, retryAfter: wait, cause: errUnknownBusy}, false
}

var (
	errUnknownOff  = errors.New("unknown-job verification is off")
	errUnknownBusy = errors.New("the unknown-job budget has no call free now")
)
