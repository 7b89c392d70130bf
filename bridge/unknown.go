package bridge

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Defaults of the unknown-job budget (see [Verifier]).
const (
	// DefaultUnknownRPM is the default budget for verifying webhooks of jobs without a JOBS record: a tenth
	// of the upstream's documented 60 requests per minute.
	DefaultUnknownRPM = 6
	// UnknownOff as VerifierConfig.UnknownRPM never verifies a webhook whose job has no JOBS record: it is
	// dead-lettered with reason unknown_job without an upstream call.
	UnknownOff = -1
)

// tokenBucket is a non-blocking token bucket on the monotonic clock. It is safe for concurrent use.
type tokenBucket struct {
	rate  float64 // tokens per second
	burst float64

	mu     sync.Mutex // mu guards tokens and last
	tokens float64
	last   time.Time
}

func newTokenBucket(perMinute, burst int) *tokenBucket {
	return &tokenBucket{rate: float64(perMinute) / 60, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// take spends a token if there is one; otherwise it reports how long until the next one.
func (b *tokenBucket) take() (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// waitingSet estimates which unknown-job webhooks this process has sent back to wait for the unknown
// budget and that are still in the consumer's ack-pending set: an id counts until its delay has passed.
type waitingSet struct {
	mu    sync.Mutex // mu guards until
	until map[string]time.Time
}

func newWaitingSet() *waitingSet { return &waitingSet{until: make(map[string]time.Time)} }

// remove forgets id: its webhook is back from waiting.
func (w *waitingSet) remove(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.until, id)
}

// add counts id as waiting until t, unless n are waiting already; it reports whether it did.
func (w *waitingSet) add(id string, t time.Time, n int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lenLocked() >= n {
		return false
	}
	w.until[id] = t
	return true
}

// len is the number of ids still waiting.
func (w *waitingSet) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lenLocked()
}

func (w *waitingSet) lenLocked() int {
	now := time.Now()
	for id, t := range w.until {
		if now.After(t) {
			delete(w.until, id)
		}
	}
	return len(w.until)
}

// admitUnknown decides whether the webhook of a job without a JOBS record may spend an upstream call now.
// When it returns false the message is settled: dead-lettered (budget off, backlog full, attempts
// exhausted) or sent back to wait for the unknown budget.
func (v *Verifier) admitUnknown(ctx context.Context, msg jetstream.Msg, id string, attempt int, log zerolog.Logger) bool {
	if v.cfg.UnknownRPM == UnknownOff {
		log.Info().Msg("webhook for a job the bridge does not know; unknown-job verification is off: dead-lettered")
		v.deadLetter(ctx, msg, id, ReasonUnknownJob, attempt, outcomeUnknownShed)
		return false
	}
	v.unknownWaiting.remove(id)
	defer func() { v.metrics.unknownWaiting.Set(float64(v.unknownWaiting.len())) }()
	ok, next := v.unknownBudget.take()
	if ok {
		return true
	}
	if attempt >= v.cfg.MaxAttempts {
		log.Warn().Msg("unknown-job budget never had room; webhook dead-lettered")
		v.deadLetter(ctx, msg, id, ReasonAttemptsExhausted, attempt, outcomeExhausted)
		return false
	}
	// Come back roughly when the budget could serve this one behind the others already waiting, spread
	// with jitter, and never sooner than the usual backoff.
	waiting := v.unknownWaiting.len()
	spread := time.Duration(rand.Float64() * float64(waiting) / v.unknownBudget.rate * float64(time.Second))
	delay := v.backoff(attempt, next+spread)
	if !v.unknownWaiting.add(id, time.Now().Add(delay), v.cfg.UnknownMaxWaiting) {
		log.Warn().Int("waiting", waiting).Msg("unknown-job backlog full; webhook dead-lettered without an upstream call")
		v.deadLetter(ctx, msg, id, ReasonUnknownJob, attempt, outcomeUnknownShed)
		return false
	}
	if err := msg.NakWithDelay(delay); err != nil {
		log.Warn().Err(err).Msg("nak webhook; redelivered after AckWait")
	}
	v.metrics.outcomes.WithLabelValues(outcomeUnknownDeferred).Inc()
	log.Debug().Dur("delay", delay).Msg("unknown-job budget empty; webhook deferred")
	return false
}
