package ops

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/evershield/bridge/internal/retry"
)

// ErrInvalid is returned for an invalid option or selection; the message names it.
var ErrInvalid = errors.New("invalid")

// ErrReplayConflict is returned when a replay of the given name exists with another selection or target.
var ErrReplayConflict = errors.New("replay name in use with another selection")

// ErrReplayDone is returned when the named replay finished before; restart it to replay again.
var ErrReplayDone = errors.New("replay already complete")

// ErrTargetIsBridgeStream is returned when a replay's target subjects would land in a bridge stream
// (WEBHOOKS, RESULTS, DEADLETTER or SLOWLANE) and so double what downstream services consume.
var ErrTargetIsBridgeStream = errors.New("replay target is stored by a bridge stream")

// ErrNotFound is returned for an unknown dead letter or job.
var ErrNotFound = errors.New("not found")

// ServiceError is a micro error reply of the bridge's request-reply endpoints.
type ServiceError struct {
	// Code is the status code: the upstream's HTTP status, 400 or 404 for the bridge's own.
	Code string
	// Description is the error code and message.
	Description string
	// RetryAfter is the Retry-After header in seconds (a BUSY refusal), 0 when absent.
	RetryAfter int
}

// Busy reports whether the bridge refused a submission because the account's upstream budget is spent
// on accepted work (code 429, BUSY): retry after RetryAfter seconds.
func (e *ServiceError) Busy() bool {
	return e.Code == "429" && strings.HasPrefix(e.Description, "BUSY")
}

func (e *ServiceError) Error() string { return e.Code + " " + e.Description }

// On a cluster, the interest of a stream or consumer made a moment ago (a new bucket's direct gets, a new
// consumer's pull requests) may not have reached the server the client is connected to: a request to it
// meets no responders. It is asked again up to maxUnheard times, waiting unheardWait longer each time
// (0.9 s in all).
const (
	maxUnheard  = 9
	unheardWait = 20 * time.Millisecond
)

// untilHeard calls f until it returns anything but nats.ErrNoResponders, at most maxUnheard+1 times.
func untilHeard(ctx context.Context, f func() error) error {
	for unheard := 0; ; unheard++ {
		err := f()
		if !errors.Is(err, nats.ErrNoResponders) || unheard == maxUnheard {
			return err
		}
		if werr := retry.Sleep(ctx, time.Duration(unheard+1)*unheardWait); werr != nil {
			return err
		}
	}
}
