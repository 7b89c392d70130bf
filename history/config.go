package history

import (
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultMaxBlockIDs is the most entries a leaf holds by default: a block of 128 KiB. Bigger leaves
// mean fewer blocks, each one subject in the server's memory; a lookup reads one leaf.
const DefaultMaxBlockIDs = 4096

// maxMaxBlockIDs keeps a block (32 bytes an entry, plus one) within NATS's default 1 MiB message size.
const maxMaxBlockIDs = 16384

// Config configures a [Store].
type Config struct {
	// KV is BRIDGE_HISTORY as natsx.Provision makes it (natsx.Resources.History): one value per key, and
	// no direct gets, so that every read is the stream leader's and never stale.
	KV jetstream.KeyValue
	// MaxBlockIDs is the most ids a leaf holds; one more splits it into 16 children. Zero means
	// [DefaultMaxBlockIDs]. Every process writing one history should use the same value: a leaf bigger
	// than a process's own is still read and merged right, and split at that process's next add to it.
	MaxBlockIDs int
}

func (c *Config) setDefaults() {
	if c.MaxBlockIDs == 0 {
		c.MaxBlockIDs = DefaultMaxBlockIDs
	}
}

// Validate reports the first field a [Store] cannot work with, wrapping [ErrInvalidConfig].
func (c *Config) Validate() error {
	switch {
	case c.KV == nil:
		return fmt.Errorf("%w: KV: required", ErrInvalidConfig)
	case c.MaxBlockIDs < 2 || c.MaxBlockIDs > maxMaxBlockIDs:
		return fmt.Errorf("%w: MaxBlockIDs %d: must be 2 to %d", ErrInvalidConfig, c.MaxBlockIDs, maxMaxBlockIDs)
	}
	return nil
}
