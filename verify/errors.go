package verify

import "errors"

// ErrInvalidConfig is wrapped by the errors of [Config.Validate].
var ErrInvalidConfig = errors.New("verify: invalid config")

// ErrMalformedWebhook is returned for a raw webhook whose body has no usable job_id; such a webhook is
// dead-lettered with reason malformed and never reaches the upstream.
var ErrMalformedWebhook = errors.New("malformed webhook")
