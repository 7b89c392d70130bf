// Package examples holds runnable downstream programs of the bridge, each its own package main in a
// subdirectory, compiled and run against an embedded nats-server by their tests:
//
//   - consume-results: a durable pull consumer on RESULTS with explicit acks, redelivery, and dedupe by job_id;
//   - submit: a submitter on moderate.<modality> with an Idempotency-Key that waits and retries on BUSY;
//   - late-results: a listener on results.late.>;
//   - embedded: a program that runs the bridge inside itself (package bridge), on its own NATS connection,
//     Prometheus registry and HTTP server.
//
// The downstream ones take the NATS URL from -s or NATS_URL (default nats://127.0.0.1:4222).
package examples
