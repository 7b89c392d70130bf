// Package ingest is the bridge's webhook receiver: it turns the upstream's one-shot, unsigned result webhooks
// into messages on the JetStream stream WEBHOOKS.
//
// Guarantee: a webhook gets a 2xx answer only after JetStream acknowledged storing it (by a quorum when the
// stream has 3 replicas). The body is published byte for byte on webhooks.<modality> (webhooks.unknown when
// the path names no modality) with Nats-Msg-Id set to its job_id, so duplicates of one webhook are stored once
// and still answered 2xx. Junk (malformed JSON, not an object, no or non-UUID job_id, too large, not JSON,
// wrong method, unknown modality, wrong token) gets a 4xx and nothing is published. When JetStream cannot take
// a webhook, or the concurrency bound is reached, the answer is 503 with Retry-After at once; nothing is queued
// in memory, and the reconciler recovers such a job by polling the upstream.
//
// A publish is never cancelled because the sender hung up: it completes or times out (Config.PublishTimeout)
// on its own and is counted by its real outcome. [Server] bounds reading a request whole, body included, by
// ReadTimeout (4 s) from its first byte, and the body is read before the publish, so an answer is written
// within ReadTimeout + PublishTimeout (at most 9 s) of the request's first byte, inside the upstream's 10 s.
//
// Signatures: with Config.Secret set (the newer upstream contract signs with Standard Webhooks), every
// webhook needs webhook-id, webhook-timestamp (unix seconds, within Config.SignatureTolerance, default 5 min,
// of now) and a webhook-signature holding "v1,<base64 HMAC-SHA256 of id.timestamp.body>", compared in
// constant time; anything else is 401 and nothing is published. Without a secret the headers are ignored.
// A signature proves the sender, not the verdict: the verifier still asks the upstream.
//
// Rotation: Config.PreviousToken and Config.PreviousSecret are accepted as well as the current ones, so that
// webhooks of jobs submitted before a rotation (their URL carries the old token; retries may be signed with
// the old secret) still get in until they are done.
//
// Hostile clients: [Server] bounds the whole request (ReadTimeout, the connection closed beyond), header size
// (MaxHeaderBytes) and idle keep-alive connections (IdleTimeout), and the number of open connections
// (MaxConns: past it the connection that has waited longest without a whole request in the handler is
// closed, never one being answered). [Handler] bounds header size (431 beyond), body size (MaxBody, 413
// beyond, unread when declared) and the webhooks in flight (MaxInFlight, 503 beyond).
//
// job_id is checked, not rewritten: it must be a JSON string holding a UUID in the canonical 8-4-4-4-12 form
// (either letter case; braces, urn:uuid: and unhyphenated forms are rejected), and it is used as given for
// Nats-Msg-Id. A missing Content-Type is accepted as JSON, because the upstream does not document the headers it
// sends and a 415 would lose every webhook; a Content-Type that is present must be application/json or
// application/*+json.
//
// [Handler] is an http.Handler that serves the webhook, health, readiness and metrics endpoints, and
// [Handler.Webhook] the webhook endpoint alone, to mount in an application's own mux; [Server] runs a
// handler with the timeouts the upstream's 10 s client timeout calls for, and a shutdown that keeps serving
// through a delay so that a rolling restart refuses nothing.
package ingest
