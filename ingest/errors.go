package ingest

import (
	"errors"
	"net/http"
)

// Errors a webhook can be rejected with. Each maps to one HTTP status in [errorStatus]; handlers wrap them with
// detail, e.g. fmt.Errorf("%w: over %d bytes", ErrTooLarge, max).
var (
	// ErrMalformed means the body is not valid JSON (400).
	ErrMalformed = errors.New("body is not valid JSON")
	// ErrNotObject means the body is valid JSON but not an object (400).
	ErrNotObject = errors.New("body is not a JSON object")
	// ErrJobID means job_id is missing, repeated, not a string or not a UUID in 8-4-4-4-12 form (400).
	ErrJobID = errors.New("job_id must be a string holding a UUID in 8-4-4-4-12 form")
	// ErrReadBody means the request could not be read or parsed (400).
	ErrReadBody = errors.New("request could not be read")
	// ErrReadTimeout means the request, body included, was not received within ServerConfig.ReadTimeout of
	// its first byte (408).
	ErrReadTimeout = errors.New("request not received in time")
	// ErrHeadersTooLarge means the request line and headers are over ServerConfig.MaxHeaderBytes (431).
	ErrHeadersTooLarge = errors.New("request headers too large")
	// ErrTooLarge means the body is over Config.MaxBody (413).
	ErrTooLarge = errors.New("body too large")
	// ErrMediaType means a Content-Type was sent and it is not application/json or application/*+json (415).
	ErrMediaType = errors.New("content type must be application/json")
	// ErrUnauthorized means Config.Token is set and ?token= is missing or wrong (401).
	ErrUnauthorized = errors.New("missing or wrong token")
	// ErrSignature means Config.Secret is set and the Standard Webhooks signature is missing, malformed, wrong,
	// or its timestamp is outside Config.SignatureTolerance (401).
	ErrSignature = errors.New("missing or invalid webhook signature")
	// ErrUnknownModality means the path names a modality not in Config.Modalities (404).
	ErrUnknownModality = errors.New("unknown modality")
	// ErrNotFound means the path is not one the handler serves (404).
	ErrNotFound = errors.New("not found")
	// ErrMethod means the method is not allowed on the path; the answer carries an Allow header (405).
	ErrMethod = errors.New("method not allowed")
	// ErrUnavailable means NATS or JetStream cannot take the webhook now: not connected, publish failed or
	// timed out (503 with Retry-After).
	ErrUnavailable = errors.New("JetStream cannot take the webhook now")
	// ErrOverloaded means WEBHOOKS is near its limit and the upstream retries (v2): refused early (503 with
	// Retry-After) instead of buffered; Config.Overloaded decides.
	ErrOverloaded = errors.New("webhook backlog near its limit")
	// ErrUnprovenFull means the backlog of webhooks without provenance (no token or signature, a job the
	// bridge does not track) is full: such webhooks are refused (503 with Retry-After) until it drains,
	// while those of known jobs are taken; Config.UnprovenFull decides.
	ErrUnprovenFull = errors.New("backlog of webhooks of unknown jobs is full")
	// ErrBusy means Config.MaxInFlight webhooks are already in flight (503 with Retry-After).
	ErrBusy = errors.New("too many webhooks in flight")
	// ErrNotReady means the readiness check failed or shutdown has started (503, /readyz only).
	ErrNotReady = errors.New("not ready")
	// ErrInvalidConfig means a Config or ServerConfig field is out of range; the message names the field.
	ErrInvalidConfig = errors.New("ingest: invalid config")
	// ErrTLSKeyPair means ServerConfig.TLSCertFile and TLSKeyFile could not be loaded as a key pair.
	ErrTLSKeyPair = errors.New("ingest: TLS key pair")
	// ErrServerRunning means Run was called on a Server that already ran.
	ErrServerRunning = errors.New("ingest: server already ran")
)

// errorClass is one row of the error table: how a sentinel is answered and counted.
type errorClass struct {
	err    error
	status int
	// code is the "error" field of the answer and the outcome label of bridge_ingest_webhooks_total.
	code string
	// message is shown instead of the error text; empty shows the (wrapped) error text, which for client
	// errors says what was wrong with the request.
	message string
}

// errorClasses is the one table from our errors to HTTP answers.
var errorClasses = []errorClass{
	{ErrMalformed, http.StatusBadRequest, "malformed_json", ""},
	{ErrNotObject, http.StatusBadRequest, "not_object", ""},
	{ErrJobID, http.StatusBadRequest, "invalid_job_id", ""},
	{ErrReadBody, http.StatusBadRequest, "read_error", ""},
	{ErrReadTimeout, http.StatusRequestTimeout, "read_error", ""},
	{ErrHeadersTooLarge, http.StatusRequestHeaderFieldsTooLarge, "headers_too_large", ""},
	{ErrTooLarge, http.StatusRequestEntityTooLarge, "body_too_large", ""},
	{ErrMediaType, http.StatusUnsupportedMediaType, "unsupported_media_type", ""},
	{ErrUnauthorized, http.StatusUnauthorized, "unauthorized", "missing or wrong ?token= query parameter"},
	{ErrSignature, http.StatusUnauthorized, "invalid_signature", ""},
	{ErrUnknownModality, http.StatusNotFound, "unknown_modality", ""},
	{ErrNotFound, http.StatusNotFound, "not_found", ""},
	{ErrMethod, http.StatusMethodNotAllowed, "method_not_allowed", ""},
	{ErrUnavailable, http.StatusServiceUnavailable, "unavailable",
		"the bridge cannot store the webhook right now; retry later (the job is also recovered by polling)"},
	{ErrBusy, http.StatusServiceUnavailable, "busy", "too many webhooks in flight; retry later"},
	{ErrOverloaded, http.StatusServiceUnavailable, "overloaded", "the webhook backlog is near its limit; retry later"},
	{ErrUnprovenFull, http.StatusServiceUnavailable, "unknown_backlog", "too many webhooks of jobs the bridge does not know wait for verification; retry later, or send the configured token"},
	{ErrNotReady, http.StatusServiceUnavailable, "not_ready", "NATS is not usable or the process is shutting down"},
}

// codeInternal is the code and outcome of an error not in the table.
const codeInternal = "internal_error"

// errorStatus maps err to its HTTP status, code and the message shown to the client. An error not in the
// table is internal: 500 and "internal error"; the caller logs the real error.
func errorStatus(err error) (status int, code, message string) {
	for _, c := range errorClasses {
		if errors.Is(err, c.err) {
			msg := c.message
			if msg == "" {
				msg = err.Error()
			}
			return c.status, c.code, msg
		}
	}
	return http.StatusInternalServerError, codeInternal, "internal error"
}
