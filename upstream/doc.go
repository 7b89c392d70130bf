// Package upstream is the bridge's single client of the content-moderation API (the upstream) and, in
// [github.com/evershield/bridge/upstream/simulator], a faithful simulator of it.
//
// Every upstream call of the process goes through one [Client]. The client guarantees:
//
//   - Budget: the client holds no budget of its own. Every call first waits, at its [Class], for the
//     [Limiter] in Config.Limiter (the bridge's is budget.Shared, the account-wide token bucket), and a
//     waiting call honours its ctx. The client tells the Limiter of every answer: a 429 with the wait the
//     upstream asked for (Retry-After, else x-ratelimit-reset), which pauses every call of the budget,
//     and any other answer as a success. Rates, class order and back-off are the Limiter's.
//   - Single shot: a call is one HTTP request. Nothing is retried by the client; callers own their retry
//     policy and use [Error.Retryable]. In particular a submission is never re-sent once it may have
//     reached the upstream (Go's transport only replays a request when nothing of it was written).
//   - Secrecy: the API key travels only in the Authorization header; it is never logged and never part
//     of an error string.
//   - Fidelity: [Job.Raw] is the JSON object exactly as the upstream sent it, unknown fields included
//     (a job of [Client.ExportJobs] excepted: the export sends CSV, from which Raw is built).
//     Modalities are not checked against a list, so the newer contract's /moderate/text and
//     /moderate/audio pass through.
//   - Contract: Config.Contract is v1 (submissions go as given), v2 (prompt and chat go to
//     /moderate/text, and the v1 field names prompt, image_url, video_url become text, image, video:
//     [RouteFor]) or auto, which decides at the first submission without billing a probe job (see
//     [Client.Submit]) and logs its choice; [Client.Contract] tells it.
//   - Rate-limit headers: a [Limiter] that also implements [HeaderObserver] is told x-ratelimit-limit,
//     -remaining and -reset of every answer that carries them, and how many of the client's calls were
//     in flight (package budget learns the account's limit from them).
//
// Choices for points the upstream's documentation leaves open (see upstream-api.md):
//
//   - Error bodies are decoded as {"error","message","statusCode"}; any other body (HTML from a proxy,
//     plain text) is tolerated: Code stays empty and Message holds the start of the body.
//   - 503 SUBMISSION_STATUS_UNKNOWN (newer contract) with a job_id: Submit returns BOTH a Submission
//     with StatusUnknown set and the *Error. The job may exist: poll it, do not resubmit blindly. That
//     error is not Retryable and matches [ErrStatusUnknown].
//   - Rate-limit headers: Retry-After is read as seconds or an HTTP date; x-ratelimit-reset as seconds
//     to wait, or as a Unix time when it is larger than 10^9.
//   - [Client.ExportJobs] reads GET /jobs/export as a stream (encoding/csv, row by row), within
//     Config.MaxExportBytes in all and [MaxExportRow] a row, and checks the header against
//     [ExportColumns]: other columns are contract drift, an error. The BOM is skipped when present. Each
//     row becomes the [Job] GET /job/{id} would have returned for the fields the row carries, its Raw
//     built from them (categories.custom empty, no error_code); the prompt column is never kept.
//   - [Client.ModerationConfig]: catalogue keys beyond ai_adult_general, underage, nsfw are the account's
//     custom categories ([ModerationConfig.Custom]); the documented response does not say where custom
//     categories appear, this is our reading.
//   - [Client.InFlight] pages by created_at windows (to=) rather than by bare offsets, so jobs finishing
//     while it pages do not shift unseen jobs past it; it falls back to offsets when created_at is
//     missing.
package upstream
