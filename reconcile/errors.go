package reconcile

import "errors"

// ErrInvalidConfig is wrapped by [Config.Validate] errors, which name the field.
var ErrInvalidConfig = errors.New("reconcile: invalid config")

// errLeaseLost ends a leadership term: the lease was taken over or could not be renewed in time.
var errLeaseLost = errors.New("reconcile: lease lost")
