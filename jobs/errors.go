package jobs

import "errors"

// ErrNotFound is returned when JOBS has no record for a job.
var ErrNotFound = errors.New("job not found")

// ErrExists is returned by Create when a record for the job already exists.
var ErrExists = errors.New("job record exists")

// ErrNotTerminal is returned by Deliver for a job the upstream has not finished.
var ErrNotTerminal = errors.New("job not terminal")
