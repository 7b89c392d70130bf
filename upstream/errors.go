package upstream

import (
	"errors"
	"fmt"
	"time"
)

// Sentinels. An [*Error] matches them with errors.Is according to its status or code, so callers can
// write errors.Is(err, upstream.ErrNotFound) and still reach the details with errors.As.
var (
	// ErrInvalidConfig is wrapped by Config.Validate errors.
	ErrInvalidConfig = errors.New("upstream: invalid config")
	// ErrInvalidArgument is returned, without calling the upstream, for an empty modality or job id.
	ErrInvalidArgument = errors.New("upstream: invalid argument")
	// ErrInvalidRequest matches 400 (INVALID_REQUEST and any other 4xx not listed below).
	ErrInvalidRequest = errors.New("upstream: invalid request")
	// ErrUnauthorized matches 401: the key is missing, invalid or inactive.
	ErrUnauthorized = errors.New("upstream: unauthorized")
	// ErrPaymentRequired matches 402: the account's credit is spent.
	ErrPaymentRequired = errors.New("upstream: payment required")
	// ErrForbidden matches 403: the key lacks the scope, or the account is terminated.
	ErrForbidden = errors.New("upstream: forbidden")
	// ErrAccountTerminated matches 403 ACCOUNT_TERMINATED (which also matches ErrForbidden).
	ErrAccountTerminated = errors.New("upstream: account terminated")
	// ErrNotFound matches 404: no such job, or another account's.
	ErrNotFound = errors.New("upstream: not found")
	// ErrRateLimited matches 429.
	ErrRateLimited = errors.New("upstream: rate limited")
	// ErrUnavailable matches any 5xx.
	ErrUnavailable = errors.New("upstream: unavailable")
	// ErrStatusUnknown matches 503 SUBMISSION_STATUS_UNKNOWN: the submission may have created a job.
	ErrStatusUnknown = errors.New("upstream: submission status unknown")
	// ErrTimeout matches a call that got no complete answer in time (Config.Timeout or the ctx deadline).
	ErrTimeout = errors.New("upstream: timeout")
	// ErrConnection matches a transport failure: refused, reset, DNS, TLS.
	ErrConnection = errors.New("upstream: connection failed")
	// ErrPayloadTooLarge matches 413 (newer contract: PAYLOAD_TOO_LARGE, media over the endpoint's limit).
	ErrPayloadTooLarge = errors.New("upstream: payload too large")
	// ErrUnsupportedMedia matches 415 (newer contract: UNSUPPORTED_MEDIA, a URL that is not a media file).
	ErrUnsupportedMedia = errors.New("upstream: unsupported media")
	// ErrMediaUnreachable matches 422 (newer contract: MEDIA_UNREACHABLE, the media URL could not be
	// fetched).
	ErrMediaUnreachable = errors.New("upstream: media unreachable")
	// ErrBadResponse matches a 2xx answer whose body is not what the contract promises.
	ErrBadResponse = errors.New("upstream: bad response")
	// ErrAnswerTooLarge matches a 2xx answer over the client's bounds: an export over
	// Config.MaxExportBytes or with a row over [MaxExportRow]. It also matches ErrBadResponse, and is not
	// Retryable: the same window would come back as large or larger; ask for a smaller one.
	ErrAnswerTooLarge = errors.New("upstream: answer too large")
)

// Codes the client itself puts in [Error.Code] when the upstream gave no answer or a useless one.
const (
	CodeTimeout     = "TIMEOUT"
	CodeCanceled    = "CANCELED"
	CodeConnection  = "CONNECTION"
	CodeBadResponse = "BAD_RESPONSE"
	// CodeStatusUnknown is the upstream's (newer contract) 503 code for a submission of unknown fate.
	CodeStatusUnknown = "SUBMISSION_STATUS_UNKNOWN"
)

// Error is a failed upstream call: either an HTTP error answer (Status > 0, Code and Message from the
// body) or a transport failure (Status 0, Code one of the Code… constants, Err the cause).
type Error struct {
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// Code is the upstream's error code (e.g. JOB_NOT_FOUND), or the client's Code… constant for
	// transport failures; empty when the error body was not the documented JSON.
	Code string
	// Message is the upstream's message, or the start of a non-JSON body.
	Message string
	// RetryAfter is the wait the upstream asked for. On a 429 it is the pause the client applied to
	// itself (the header's value, else the client's own back-off).
	RetryAfter time.Duration
	// Endpoint names the call, e.g. "GET /job/{id}" or "POST /moderate/prompt".
	Endpoint string
	// JobID is the job the error is about, when known (GET /job/{id}, or the job_id of a 503
	// SUBMISSION_STATUS_UNKNOWN).
	JobID string
	// Err is the underlying transport error, if any.
	Err error
}

// Error implements error. It never contains the API key.
func (e *Error) Error() string {
	s := "upstream: " + e.Endpoint
	if e.Status > 0 {
		s += fmt.Sprintf(": %d", e.Status)
	}
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the transport error, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is matches the package's sentinels by status and code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrStatusUnknown:
		return e.Code == CodeStatusUnknown
	case ErrAccountTerminated:
		return e.Code == "ACCOUNT_TERMINATED"
	case ErrTimeout:
		return e.Status == 0 && e.Code == CodeTimeout
	case ErrConnection:
		return e.Status == 0 && e.Code == CodeConnection
	case ErrBadResponse:
		return e.Code == CodeBadResponse
	case ErrUnavailable:
		return e.Status >= 500
	}
	switch e.Status {
	case 401:
		return target == ErrUnauthorized
	case 402:
		return target == ErrPaymentRequired
	case 403:
		return target == ErrForbidden
	case 404:
		return target == ErrNotFound
	case 413:
		if target == ErrPayloadTooLarge {
			return true
		}
	case 415:
		if target == ErrUnsupportedMedia {
			return true
		}
	case 422:
		if target == ErrMediaUnreachable {
			return true
		}
	case 429:
		return target == ErrRateLimited
	}
	return target == ErrInvalidRequest && e.Status >= 400 && e.Status < 500 && e.Status != 408
}

// Retryable reports whether a later identical call may succeed: 408, 429, 5xx (except
// SUBMISSION_STATUS_UNKNOWN, whose job may exist and must be polled instead), timeouts, cancellations,
// connection failures and undecodable 2xx answers (except those over the client's bounds,
// [ErrAnswerTooLarge]). 400, 401, 402, 403 and 404 are final.
//
// For a Submit, a retryable transport error also means the submission's fate is unknown.
func (e *Error) Retryable() bool {
	switch {
	case e.Code == CodeStatusUnknown, errors.Is(e.Err, ErrAnswerTooLarge):
		return false
	case e.Status == 0, e.Status == 408, e.Status == 429, e.Status >= 500:
		return true
	case e.Status >= 200 && e.Status < 300: // BAD_RESPONSE
		return true
	}
	return false
}
