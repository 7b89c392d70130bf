// Package simulator is a fast, faithful, scriptable stand-in for the upstream moderation API
// (/work/shared/upstream-api.md), used by the tests, `bridge simulate`, the demo and the load benches. It
// serves thousands of submissions per second on loopback. It speaks one of two contracts, chosen by
// Config.Contract: ContractV1 (the default), the documented "evershield" contract, or ContractV2, the
// newer contract of the vendor's integration material (upstream-api.md §10).
//
// # Both contracts
//
// POST /api/v1/moderate/{modality} (multipart and urlencoded forms), GET /api/v1/job/{id}, GET
// /api/v1/jobs, GET /api/v1/jobs/export, GET /api/v1/me/moderation-config, POST
// /api/v1/webhook/register and GET /health, plus the unauthenticated inspection endpoint GET
// /_sim/stats (calls per endpoint, jobs by status, webhook attempts, retries and give-ups, the
// contract). Keys carry scopes, jobs belong to the key's account, errors are
// {"error","message","statusCode"}. Jobs move queued → processing → completed|failed on timers. The
// faults (Fault per endpoint: latency, 5xx, 429, SUBMISSION_STATUS_UNKNOWN; per job: drop, duplicate,
// never finish, fail, reject), the markers, the test controls (HoldJob, CompleteJob, …) and the
// inspection API are the same in both. Faults are seeded (math/rand/v2 PCG): per-job decisions use a
// generator derived from the seed and the job's sequence number, so the n-th job of a run behaves the
// same whatever the goroutine timing. Webhooks go out from a bounded worker pool, so slow receivers never
// block the API.
//
// # v1 only
//
//   - Submissions: prompt (field prompt), image (image_url), video (video_url), chat (prompt; needs
//     moderate:chat, which the default key lacks unless Config.GrantChat).
//   - Each completed or failed job POSTs its webhook once (10 s timeout, no retry), unsigned unless
//     Config.WebhookSecret is set. The body is {job_id, status, is_prohibited, categories, reason?,
//     error_code?, completed_at}.
//   - The rate limit is a token bucket of RPM per minute with a burst of 5 s worth (Config.Burst). A 429
//     carries Retry-After and X-Ratelimit-Reset; the x-ratelimit-* headers on every answer only with
//     Config.RateLimitHeaders (the bridge must not take them as a sign of v2).
//
// # v2 only
//
//   - Submissions: text (field text, at most 20,000 characters), image (image), video (video), audio
//     (audio), with job types "text", "image", "video", "audio". The v1 field names (prompt on text,
//     image_url, video_url) are refused with 400 INVALID_REQUEST naming the field.
//   - /moderate/prompt and /moderate/chat are retired: 410 ENDPOINT_RETIRED, no job, nothing billed.
//   - New errors: 413 PAYLOAD_TOO_LARGE, 415 UNSUPPORTED_MEDIA, 422 MEDIA_UNREACHABLE (see below).
//   - GET /job/{id} adds api_key_id and api_key_name (Key.ID, Key.Name), and nsfw on completed image and
//     video jobs.
//   - Webhooks are signed with Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature
//     "v1,<base64 HMAC-SHA256 of id.timestamp.body>", each attempt signed as it is sent) plus
//     X-Omnifence-Delivery-Id. Without Config.WebhookSecret a whsec_ secret is generated
//     (Simulator.WebhookSecret). The body is {is_prohibited, reason?, job_id, status, completed_at,
//     delivery_id} plus nsfw on image and video jobs: no type, no categories.
//   - A webhook not answered 2xx within WebhookTimeout (10 s) is retried on DefaultWebhookRetrySchedule:
//     12 attempts over about 5 h (9 s doubling); Config.WebhookRetryScale compresses it for tests.
//   - Every answer of a known key carries x-ratelimit-limit, -remaining and -reset (seconds until the
//     window resets), a 429 also retry-after. The limit is a fixed one-minute window of RPM requests.
//   - DELETE /webhook/register detaches the account's URL.
//
// Choices for points the upstream's material leaves open (UNKNOWN in upstream-api.md), both contracts
// unless marked:
//
//   - Chat jobs (v1) take their text in `prompt` and have type "chat"; results look like prompt results.
//   - Failed jobs also send a webhook, with error_code (PROCESSING_FAILED unless a test chooses another)
//     and a null is_prohibited; Content-Type is application/json.
//   - A job's own webhook_url wins; otherwise the account's registered URL at completion time is used.
//     webhook_url may be any http(s) URL, loopback included (receivers in tests are on loopback), in v2
//     too although the vendor never delivers to non-public URLs; only media URLs must be public: literal
//     private, loopback, link-local or unspecified IPs and localhost are rejected, without DNS lookups.
//   - POST /webhook/register takes {"url"} (empty clears it), needs no scope and answers 200 {"url"};
//     v2's DELETE answers 200 {"url":""}.
//   - GET /jobs: limit defaults to 20; a limit outside 1..100, a bad status, type, decision, from, to or
//     offset is 400 INVALID_REQUEST. Items are full job objects.
//   - GET /jobs/export (scope job:read, one request of the rate limit however many rows) streams text/csv;
//     charset=utf-8: a UTF-8 BOM, the header row of upstream.ExportColumns, then one row per job of the
//     account with from <= created_at < to, newest first as in GET /jobs, flushed every 256 rows. The jobs
//     are chosen when the request comes; a row shows its job as it is when the row is written. from and
//     to are required RFC 3339 date-times (a date alone is refused), to after from, at most 366 days
//     apart; anything else is 400 INVALID_REQUEST. prompt is the submitted text as judged (trimmed),
//     empty for media jobs (audio included); reason, is_prohibited and completed_at are as in GET /job,
//     empty where that has null or nothing; a category column is empty where the job's categories
//     lack the category (text jobs, and media jobs without a decision). There is no error_code column.
//   - GET /me/moderation-config (scope job:read, one request of the rate limit) enables every built-in
//     category and text, and lists in its catalogue ({label, description, icon} each) the built-in
//     categories and the custom ones. Our reading, which the documented response does not state:
//     catalogue keys beyond ai_adult_general, underage, nsfw are the account's custom categories.
//   - Custom categories (Config.CustomCategories, [Simulator.SetCustomCategories]; the same for every
//     account) are decided at completion: every job that completes while they are set carries each slug
//     in categories.custom (GET /job of both contracts, the v1 webhook; the v2 webhook has no
//     categories). A slug is true when a form field of the submission carried MarkerCustom and the slug
//     ("sim:custom:brand_logos"), or [Outcome].Custom says so; otherwise false. A true custom category
//     rejects the job, text jobs included (with a reason), as the upstream's decision rule does for
//     media. Jobs completed before a slug was set, and failed jobs, keep what they had ({} at most).
//   - Health and stats are not counted against the rate limit. Rate-limit headers need a limit (RPM > 0),
//     and an answer to an unknown key (401) has no account to report, so carries none.
//   - v2 retired endpoints answer 410 Gone, not 404: the path is known and gone. The bridge treats either
//     as "this account is v2". The call is counted under submit and against the rate limit.
//   - v2 text over 20,000 characters is 400 INVALID_REQUEST (as the vendor's error table says), not 413;
//     413 is for media over the endpoint's limit, a form of more than eight fields, or a body over 1 MiB.
//     Another field over 16,384 bytes is 400.
//   - v2 probes every media URL at submission (the vendor does it for video today), without network
//     access: a host under the reserved TLD .invalid is 422 MEDIA_UNREACHABLE; a path ending in a
//     non-media extension (.m3u8, .mpd, .html, .htm, .php, .txt, .json, .xml, .pdf, .exe, .zip) is 415
//     UNSUPPORTED_MEDIA; MarkerTooLarge ("sim:too-large") in the URL is 413 PAYLOAD_TOO_LARGE. None of
//     them creates a job.
//   - v2 audio jobs are judged like text: categories {"custom":{}}, a reason when rejected, no nsfw. nsfw is
//     a boolean, the job's nsfw category.
//   - v2 webhook-id = delivery_id = X-Omnifence-Delivery-Id = "wh_<job_id>": one message per job, the same
//     on every retry and on a duplicate. Failed attempts are retried also after a connection error.
//   - 503 SUBMISSION_STATUS_UNKNOWN (Fault.StatusUnknownRate, both contracts) carries job_id; the job
//     exists unless Fault.StatusUnknownLostRate's seeded coin says it was lost (then GET answers 404).
//   - Markers in any form field make a job deterministic: "sim:reject" (prohibited), "sim:fail"
//     (failed), "sim:hold" (stays processing until [Simulator.CompleteJob] or [Simulator.ReleaseJob]),
//     "sim:drop" (its webhook is never sent, as with DropRate) and "sim:custom:<slug>" (that custom
//     category true, see above).
package simulator
