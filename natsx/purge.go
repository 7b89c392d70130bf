package natsx

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
)

// PurgeKey removes key from the KV bucket whose stream is s (KV_<bucket>), by purging the key's subject
// from the stream: up to and including revision upTo (a write after it stays), or every revision when upTo
// is 0. This is the one way the bridge removes a key that must leave nothing behind: a KV Delete or Purge
// writes a marker, and the marker keeps the subject (one entry of the server's per-subject index) until
// the bucket's TTL. Purging a key that is absent is no error.
func PurgeKey(ctx context.Context, s jetstream.Stream, key string, upTo uint64) error {
	bucket, ok := contract.KVBucket(s.CachedInfo().Config.Name)
	if !ok {
		return fmt.Errorf("purge key %s: stream %s holds no KV bucket", key, s.CachedInfo().Config.Name)
	}
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(contract.KVSubject(bucket, key))}
	if upTo > 0 {
		opts = append(opts, jetstream.WithPurgeSequence(upTo+1))
	}
	return s.Purge(ctx, opts...)
}
