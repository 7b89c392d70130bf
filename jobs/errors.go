package jobs

import (
	"errors"
	"fmt"
)

// ErrNotFound is returned when JOBS has no record for a job.
var ErrNotFound = errors.New("job not found")

// ErrExists is returned by Create when a record for the job already exists.
var ErrExists = errors.New("job record exists")

// ErrNotTerminal is returned by Deliver for a job the upstream has not finished.
var ErrNotTerminal = errors.New("job not terminal")

// ErrInHistory is returned by [Deliverer.Ensure], and by a [OncePublisher] whose claim check found it,
// when the job has no JOBS record and its id is in the history of delivered jobs: its result is out, and
// its record and fence were compacted away. It matches [ErrAlreadyPublished]; Deliver reports it as
// AlreadyDelivered.
var ErrInHistory = fmt.Errorf("%w: the job is in the history of delivered jobs", ErrAlreadyPublished)

// ErrInvalidConfig is returned by [NewCompactor] for a configuration it cannot work with; the message
// names the field.
var ErrInvalidConfig = errors.New("invalid jobs config")
