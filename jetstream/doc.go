// Package jetstream owns the bridge's NATS side: the embedded nats-server that is the default deployment,
// the client connection (embedded in-process or an external cluster), and the idempotent provisioning of
// the streams, KV buckets and consumers named in DESIGN.md. The contract names live in names.go.
//
// Inside this package nats.go's jetstream package is imported as natsjs; other packages import this one
// as bjs.
package jetstream
