package history

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
)

// Store reads and writes the history in its bucket. It keeps no ids between calls. It is safe for
// concurrent use, and any number of Stores in any number of processes may add to one history at once.
type Store struct {
	kv  jetstream.KeyValue
	max int
	// reads and readBytes count the blocks read and their bytes, for the benchmark.
	reads, readBytes atomic.Uint64
	// beforeWrite, when set (tests), is called before each block write; an error stops the add there.
	beforeWrite func(key string, split bool) error
}

// New returns a Store on cfg.KV.
func New(cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{kv: cfg.KV, max: cfg.MaxBlockIDs}, nil
}

// Lookup returns the entry of the job jobID and whether it was added. It reads the root block and
// follows split markers down to the leaf that would hold the id: one read a level (the package
// documentation gives the cost). It returns ErrInvalidID for a malformed id and ErrCorrupt for a block
// it cannot read; on any error the answer is unknown, never "not delivered".
func (s *Store) Lookup(ctx context.Context, jobID string) (Entry, bool, error) {
	x, err := parseID(jobID)
	if err != nil {
		return Entry{}, false, err
	}
	prefix := ""
	for {
		b, err := s.read(ctx, prefix)
		switch {
		case err != nil:
			return Entry{}, false, fmt.Errorf("history lookup %s: %w", jobID, err)
		case b.rev == 0:
			return Entry{}, false, nil
		case !b.split:
			e, ok := find(b.entries, x)
			if !ok {
				return Entry{}, false, nil
			}
			return e.export(), true, nil
		case len(prefix) == maxDepth:
			return Entry{}, false, fmt.Errorf("history lookup %s: %w", jobID, errDeepSplit(prefix))
		}
		prefix = child(prefix, x)
	}
}

// Delivered reports whether the job jobID was added: [Store.Lookup] without the entry.
func (s *Store) Delivered(ctx context.Context, jobID string) (bool, error) {
	_, ok, err := s.Lookup(ctx, jobID)
	return ok, err
}

// Add records every entry (job ids of 36 characters, in any case and order, repeats allowed) as
// delivered. When it returns nil, every later Lookup of them, in any process, finds them. When it
// returns an error, some may be recorded and some not: call it again, as adding an entry twice is
// harmless; an id already there keeps the entry it has. A malformed id fails the whole call with
// ErrInvalidID before anything is written.
func (s *Store) Add(ctx context.Context, entries []Entry) error {
	ids, err := parseEntries(entries)
	if err != nil || len(ids) == 0 {
		return err
	}
	if err := s.insert(ctx, "", ids); err != nil {
		return fmt.Errorf("history add: %w", err)
	}
	return nil
}

// insert merges ids (ascending, all starting with prefix) into the block of prefix, with
// compare-and-set, and reads again and redoes the merge on the newer version when another writer
// wrote first. A leaf that would pass s.max ids is split.
func (s *Store) insert(ctx context.Context, prefix string, ids []entry) error {
	for {
		b, err := s.read(ctx, prefix)
		if err != nil {
			return err
		}
		if b.split {
			return s.route(ctx, prefix, ids)
		}
		merged, added := union(b.entries, ids)
		if added == 0 {
			return nil // all there already: nothing to write
		}
		if len(merged) > s.max {
			err = s.split(ctx, prefix, merged, b.rev)
		} else {
			err = s.write(ctx, prefix, encodeLeaf(merged), b.rev)
		}
		if !errors.Is(err, errConflict) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// split turns the leaf of prefix (at revision rev, 0 if absent) into a split marker. First every id of
// the leaf, the new ones included, goes into the children (merged with what they hold, so that a split
// interrupted earlier and redone now loses and doubles nothing); only then is the marker written, with
// compare-and-set on rev. Until that write the leaf holds every id it held, and lookups read it alone.
func (s *Store) split(ctx context.Context, prefix string, ids []entry, rev uint64) error {
	if err := s.route(ctx, prefix, ids); err != nil {
		return err
	}
	return s.write(ctx, prefix, []byte{kindSplit}, rev)
}

// route inserts ids (ascending, all starting with prefix) into the children of prefix.
func (s *Store) route(ctx context.Context, prefix string, ids []entry) error {
	if len(prefix) == maxDepth {
		return errDeepSplit(prefix)
	}
	for start := 0; start < len(ids); {
		c := child(prefix, ids[start].id)
		end := start + 1
		for end < len(ids) && child(prefix, ids[end].id) == c {
			end++
		}
		if err := s.insert(ctx, c, ids[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// read reads the block of prefix from the stream leader (BRIDGE_HISTORY allows no direct gets).
func (s *Store) read(ctx context.Context, prefix string) (block, error) {
	e, err := s.kv.Get(ctx, key(prefix))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.reads.Add(1)
		return block{}, nil
	}
	if err != nil {
		return block{}, fmt.Errorf("read history block %s: %w", key(prefix), err)
	}
	s.reads.Add(1)
	s.readBytes.Add(uint64(len(e.Value())))
	split, entries, err := decode(e.Value())
	if err != nil {
		return block{}, fmt.Errorf("history block %s: %w", key(prefix), err)
	}
	return block{rev: e.Revision(), split: split, entries: entries}, nil
}

// write stores v as the block of prefix if it is still at rev (0: absent), or returns errConflict.
func (s *Store) write(ctx context.Context, prefix string, v []byte, rev uint64) error {
	k := key(prefix)
	if s.beforeWrite != nil {
		if err := s.beforeWrite(k, v[0] == kindSplit); err != nil {
			return err
		}
	}
	var err error
	if rev == 0 {
		_, err = s.kv.Create(ctx, k, v)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return errConflict
		}
	} else {
		_, err = s.kv.Update(ctx, k, v, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) { // nats.go maps both 10071 (R1) and 10164 (R3) to it
			return errConflict
		}
	}
	if err != nil {
		return fmt.Errorf("write history block %s: %w", k, err)
	}
	return nil
}
