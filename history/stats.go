package history

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Stats is what the server keeps for the history, read from the bucket's stream state: one request,
// whatever the length of the history.
type Stats struct {
	// Blocks is the number of blocks stored, leaves and split markers (one message each).
	Blocks uint64 `json:"blocks"`
	// Bytes is what the bucket's stream keeps (State.Bytes): the blocks with their per-message overhead.
	Bytes uint64 `json:"bytes"`
	// Subjects is the number of subjects the server indexes for the bucket (State.NumSubjects), each one
	// entry in its memory: one a block.
	Subjects uint64 `json:"subjects"`
}

// Stats reads [Stats] from the bucket's stream state.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	st, err := s.kv.Status(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("history stats: %w", err)
	}
	kvs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return Stats{}, fmt.Errorf("history stats: bucket status %T has no stream state", st)
	}
	state := kvs.StreamInfo().State
	return Stats{Blocks: state.Msgs, Bytes: state.Bytes, Subjects: state.NumSubjects}, nil
}

// Census is what a walk of the whole tree found.
type Census struct {
	// Leaves and Splits count the blocks reachable from the root by kind.
	Leaves, Splits uint64
	// IDs is the number of ids in reachable leaves: each id once, as leaves are checked to hold only
	// their own prefix's ids, in strictly ascending order.
	IDs uint64
}

// Census walks the whole tree from the root, reading every reachable block: its cost grows with the
// history (one read a block), so it is for tests, benchmarks and an operator's check, not for a hot
// path. A block stored but not reachable (a child written by a split that was interrupted before its
// marker) is not counted; [Stats.Blocks] counts it. It returns ErrCorrupt for a leaf holding an id of
// another prefix.
func (s *Store) Census(ctx context.Context) (Census, error) {
	var c Census
	if err := s.census(ctx, "", &c); err != nil {
		return Census{}, fmt.Errorf("history census: %w", err)
	}
	return c, nil
}

func (s *Store) census(ctx context.Context, prefix string, c *Census) error {
	b, err := s.read(ctx, prefix)
	switch {
	case err != nil:
		return err
	case b.rev == 0:
		return nil
	case b.split && len(prefix) == maxDepth:
		return errDeepSplit(prefix)
	case b.split:
		c.Splits++
		for i := range len(hexDigits) {
			if err := s.census(ctx, prefix+hexDigits[i:i+1], c); err != nil {
				return err
			}
		}
		return nil
	}
	for _, e := range b.entries {
		if !hasPrefix(e.id, prefix) {
			return fmt.Errorf("%w: block %s holds an id of another prefix", ErrCorrupt, key(prefix))
		}
	}
	c.Leaves++
	c.IDs += uint64(len(b.entries))
	return nil
}
