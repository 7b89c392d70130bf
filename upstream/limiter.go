package upstream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Limiter decides when an upstream call may be made. The [Client] asks it before every call and tells it
// of every answer, so one Limiter is the whole request budget of the clients that share it. Package
// budget implements it: budget.Shared, the account-wide token bucket that all bridge processes share
// through NATS, and budget.Unlimited. Implementations are safe for concurrent use.
type Limiter interface {
	// Wait blocks until a call of class may be made, or ctx ends (then it returns ctx's error). Accepted
	// work goes first: a waiting verification before a waiting poll before a waiting submission. A
	// submission is never made to wait long: when no call can be granted to it soon, Wait returns a
	// *BusyError at once.
	Wait(ctx context.Context, class Class) error
	// RateLimited reports a 429. hint is the wait the upstream asked for (0 = none). Every holder of the
	// budget pauses; the pause applied is returned.
	RateLimited(hint time.Duration) time.Duration
	// Succeeded reports an answer that was not a 429.
	Succeeded()
}

// HeaderObserver is an optional interface of a [Limiter]: a Limiter that implements it is told the
// rate-limit headers (x-ratelimit-limit, -remaining, -reset) of every answer that carries them, 429s
// included, in either contract. It is safe for concurrent use and must not block.
type HeaderObserver interface {
	ObserveLimit(RateLimit)
}

// RateLimit is what one answer's rate-limit headers said.
type RateLimit struct {
	// Limit is x-ratelimit-limit: the account's requests per window (a minute).
	Limit int
	// Remaining is x-ratelimit-remaining: requests left in the window after this one; -1 when absent.
	Remaining int
	// Reset is x-ratelimit-reset as a duration from when the answer came: when the window resets; 0
	// when absent.
	Reset time.Duration
	// InFlight is how many other calls of the same client were sent and not yet answered when this
	// answer came: the upstream may not have counted them in Remaining yet.
	InFlight int
}

// parseRateLimit reads the rate-limit headers of an answer; ok is false without a positive
// x-ratelimit-limit. x-ratelimit-reset is seconds to wait, or a Unix time when larger than 10^9.
func parseRateLimit(h http.Header, now time.Time) (RateLimit, bool) {
	limit, err := strconv.Atoi(strings.TrimSpace(h.Get("X-Ratelimit-Limit")))
	if err != nil || limit <= 0 {
		return RateLimit{}, false
	}
	rl := RateLimit{Limit: limit, Remaining: -1}
	if r, err := strconv.Atoi(strings.TrimSpace(h.Get("X-Ratelimit-Remaining"))); err == nil && r >= 0 {
		rl.Remaining = r
	}
	if f, err := strconv.ParseFloat(strings.TrimSpace(h.Get("X-Ratelimit-Reset")), 64); err == nil && f > 0 {
		if f > 1e9 {
			rl.Reset = max(0, time.Unix(0, int64(f*1e9)).Sub(now))
		} else {
			rl.Reset = time.Duration(f * float64(time.Second))
		}
	}
	return rl, true
}

// ErrBusy is matched by a *BusyError: the budget cannot take a new submission now.
var ErrBusy = errors.New("upstream: budget busy")

// BusyError is a submission refused by the budget before any call: the account's request budget is
// spent on work already accepted. RetryAfter is when a retry is likely to be granted.
type BusyError struct {
	RetryAfter time.Duration
	// Reason says what is short, for people: e.g. "no request free for a submission within 1s".
	Reason string
}

// Error implements error.
func (e *BusyError) Error() string {
	return fmt.Sprintf("upstream: budget busy: %s; retry after %v", e.Reason, e.RetryAfter.Round(time.Second))
}

// Is makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// RetryAfterSeconds is RetryAfter in whole seconds, rounded up, at least 1: the Retry-After header value.
func (e *BusyError) RetryAfterSeconds() int {
	return max(1, int(math.Ceil(e.RetryAfter.Seconds())))
}
