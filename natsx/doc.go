// Package natsx owns the bridge's NATS plumbing: the embedded nats-server that is the default deployment,
// the client connection (embedded in-process or an external cluster), the idempotent provisioning of the
// streams, KV buckets and consumers named in the contract ([contract]) with [MoveOldSlowLane], which
// upgrades a store of the earlier slow-lane layout, and [PublishMsg], which makes Nats-Msg-Id behave
// alike on a cluster and a single node.
//
// The result fence (a result once for ever) lives with the results it decides, in package jobs.
package natsx
