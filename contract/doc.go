// Package contract is the one home of the bridge's names (docs/DESIGN.md): subjects, streams, KV buckets,
// consumers, the micro service, headers and their values, result sources, upstream contracts and the
// modality table. Role code spells none of these itself; it calls the constants and builders here.
package contract
