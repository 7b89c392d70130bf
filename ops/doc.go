// Package ops holds the operator commands behind bridge replay, bridge deadletter, bridge status, bridge
// submit and bridge job: the logic lives here and cmd/bridge only parses flags and prints.
//
// Everything works on the contract's streams and buckets (WEBHOOKS, RESULTS, DEADLETTER, SLOWLANE, JOBS), so the
// standard nats CLI keeps working beside it. What each operation guarantees:
//
//   - [Replay] republishes a selection of RESULTS or WEBHOOKS (subjects, sequence range, time window, job
//     ids) in stream order, each selected message once, either to a subject prefix (default replay. plus
//     the original subject, so live subscribers of results.> see nothing twice) or, for WEBHOOKS, back into
//     WEBHOOKS for the running verifier to check again. Its progress is kept in the KV bucket
//     BRIDGE_REPLAY under the replay's name, so an interrupted replay resumes after the last message done.
//   - [Redrive] puts dead letters back into WEBHOOKS under a new Nats-Msg-Id; the verifier and the JOBS
//     record keep the job's result single however often a webhook is redriven.
//   - [Status] gathers one report of NATS and stream health, consumer lag, pending jobs, dead letters and,
//     from the bridges' /metrics, upstream budget use and 429s.
//
// Nothing here imports a role package: ops reads and writes NATS and JOBS like any other client.
package ops
