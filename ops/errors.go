package ops

import (
	"errors"
	"strings"
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
