// Package jetstream owns the bridge's NATS side: the embedded nats-server that is the default deployment,
// the client connection (embedded in-process or an external cluster), and the idempotent provisioning of
// the streams, KV buckets and consumers named in DESIGN.md. The contract names live in names.go. It also
// holds the two publish paths whose rules are about the stream itself: [PublishMsg] (Nats-Msg-Id alike on
// a cluster and a single node) and [OncePublisher] (a result once for ever, through its fence: claim,
// result, done; fence.go).
//
// Inside this package nats.go's jetstream package is imported as natsjs; other packages import this one
// as bjs.
package jetstream
