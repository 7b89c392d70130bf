package verify

import (
	"context"
	"errors"
	"math/rand/v2"
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

// UnknownBudget is what the verifier asks of the unknown-job budget: budget.Shared under
// budget.KeyUnknown, which every verifier process of the account shares. It is safe for concurrent use.
type UnknownBudget interface {
	// Wait blocks until a call of class may be made, or ctx ends (then it returns ctx's error).
	Wait(ctx context.Context, class upstream.Class) error
	// Available is the number of calls that could start now without waiting.
	Available() float64
}

// unknownTokens is the unknown-job policy on top of the budget: take never waits, so it fails while the
// slow lane (which holds the older webhooks) waits in line for the budget; wait waits in line; eta is
// about how long until a token is free.
type unknownTokens struct {
	lim  UnknownBudget
	rate float64 // tokens per second: UnknownRPM/60
}

// takeWait bounds take: a lease is one NATS round trip, granted at once when the bucket has a token.
const takeWait = 50 * time.Millisecond

// take spends a token if one is free now.
func (t *unknownTokens) take() bool {
	ctx, cancel := context.WithTimeout(context.Background(), takeWait)
	defer cancel()
	return t.lim.Wait(ctx, upstream.ClassVerify) == nil
}

// wait waits in line for a token, or until ctx ends.
func (t *unknownTokens) wait(ctx context.Context) error {
	return t.lim.Wait(ctx, upstream.ClassVerify)
}

// eta is about how long until a token is free, for a caller that will not wait in line.
func (t *unknownTokens) eta() time.Duration {
	if avail := t.lim.Available(); avail < 1 {
		return time.Duration((1 - avail) / t.rate * float64(time.Second))
	}
	return 0
}

// admitUnknown decides whether the webhook of a job without a JOBS record may spend an upstream call
// now, and from which budget; see [Verifier]. Provenance first: a webhook that carried the configured
// token or a valid signature, or whose id the account's job list holds, is verified at the full budget
// (its job then gets a record). Any other spends the unknown-job budget: at once when a token is free;
// else on the main lane it moves to the slow lane, and on the slow lane it is parked (a delayed nak that
// frees the worker and spends no attempt) until a token is likely free. When it may not go on, it returns
// the verdict.
func (v *Verifier) admitUnknown(ctx context.Context, d *delivery) (verdict, bool) {
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
		return verdict{action: actLane, outcome: outcomeUnknownLaned, cause: errUnknownBusy}, false
	}
	if vd, decided, ok := v.exported(ctx, d); ok {
		return vd, !decided
	}
	returning := v.lists.missing.Has(d.id)
	if returning && v.parked.Add(-1) < 0 {
		v.parked.Store(0)
	}
	found, err := v.lists.found(ctx, d.id, d.receivedAt)
	switch {
	case err != nil && d.lane.stopped():
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
	backlog := time.Duration(float64(v.parked.Add(1)) / v.unknownBudget.rate * float64(time.Second))
	wait := v.unknownBudget.eta() + time.Duration(rand.Int64N(int64(max(backlog, time.Second))))
	return verdict{action: actRetry, outcome: outcomeUnknownWaiting, retryAfter: wait, cause: errUnknownBusy}, false
}

var (
	errUnknownOff  = errors.New("unknown-job verification is off")
	errUnknownBusy = errors.New("the unknown-job budget has no call free now")
)
