package simulator

import "errors"

var (
	// ErrInvalidConfig is wrapped by Config.Validate errors.
	ErrInvalidConfig = errors.New("simulator: invalid config")
	// ErrUnknownJob is returned by the test controls for an id the simulator never issued.
	ErrUnknownJob = errors.New("simulator: unknown job")
	// ErrJobTerminal is returned by the test controls for a job that already completed or failed.
	ErrJobTerminal = errors.New("simulator: job already terminal")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("simulator: closed")
)
