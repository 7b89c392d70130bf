package bridge

import "errors"

// ErrInvalidConfig is wrapped by the Validate errors of [VerifierConfig] and [SubmitConfig].
var ErrInvalidConfig = errors.New("bridge: invalid config")

// ErrMalformedWebhook is returned for a raw webhook whose body has no usable job_id; such a webhook is
// dead-lettered with reason malformed and never reaches the upstream.
var ErrMalformedWebhook = errors.New("malformed webhook")
