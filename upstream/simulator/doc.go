// Package simulator is a fast, faithful, scriptable stand-in for the upstream moderation API
// (/work/shared/upstream-api.md, older "evershield" contract), used by the tests, `bridge simulate`, the
// demo and the load benches. It serves thousands of submissions per second on loopback.
//
// It implements POST /api/v1/moderate/{modality} (multipart and urlencoded forms), GET /api/v1/job/{id},
// GET /api/v1/jobs, POST /api/v1/webhook/register and GET /health, plus the unauthenticated inspection
// endpoint GET /_sim/stats. Keys carry scopes (the default key lacks moderate:chat unless
// Config.GrantChat), jobs belong to the key's account, errors are {"error","message","statusCode"}.
//
// Jobs move queued → processing → completed|failed on timers. Each completed or failed job POSTs its
// webhook once (10 s timeout, no retry) from a bounded worker pool, so slow receivers never block the
// API. Faults are seeded (math/rand/v2 PCG): per-job decisions use a generator derived from the seed and
// the job's sequence number, so the n-th job of a run behaves the same whatever the goroutine timing.
//
// Choices for points the upstream's documentation leaves open:
//
//   - Chat jobs take their text in `prompt` and have type "chat"; results look like prompt results.
//   - Failed jobs also send a webhook: {job_id, status:"failed", is_prohibited:null, categories,
//     error_code, completed_at}; error_code is PROCESSING_FAILED unless a test chooses another.
//   - Webhook bodies have no type and no created_at; Content-Type is application/json.
//   - A job's own webhook_url wins; otherwise the account's registered URL at completion time is used.
//     webhook_url may be any http(s) URL, loopback included (receivers in tests are on loopback); only
//     image_url and video_url (any required field ending in _url) must be public: literal private,
//     loopback, link-local or unspecified IPs and localhost are rejected, without DNS lookups.
//   - POST /webhook/register takes {"url"} (empty clears it), needs no scope and answers 200 {"url"}.
//   - GET /jobs: limit defaults to 20; a limit outside 1..100, a bad status, type, decision, from, to or
//     offset is 400 INVALID_REQUEST. Items are full job objects.
//   - The per-account limit is a token bucket of RPM per minute with a burst of 5 s worth (Config.Burst);
//     health and stats are not counted. A 429 carries Retry-After (whole seconds) and x-ratelimit-reset.
//   - Markers in any form field make a job deterministic: "sim:reject" (prohibited), "sim:fail"
//     (failed) and "sim:hold" (stays processing until [Simulator.CompleteJob] or [Simulator.ReleaseJob]).
package simulator
