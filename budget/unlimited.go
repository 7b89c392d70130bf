package budget

import (
	"context"
	"math"
	"time"

	"github.com/evershield/bridge/upstream"
)

// Unlimited is the budget of a client that needs none (a one-off tool, a test that is not about the
// budget): every call goes at once, and a 429 pauses nothing. It is safe for concurrent use.
type Unlimited struct{}

var _ upstream.Limiter = Unlimited{}

// Wait implements [upstream.Limiter]: it never waits.
func (Unlimited) Wait(context.Context, upstream.Class) error { return nil }

// RateLimited implements [upstream.Limiter]: nothing pauses; the upstream's hint is returned.
func (Unlimited) RateLimited(hint time.Duration) time.Duration { return hint }

// Succeeded implements [upstream.Limiter].
func (Unlimited) Succeeded() {}

// Available is +Inf, as [Shared.Available] would be without a limit.
func (Unlimited) Available() float64 { return math.Inf(1) }

// Capacity is +Inf, as [Shared.Capacity] would be without a limit.
func (Unlimited) Capacity(time.Duration) float64 { return math.Inf(1) }
