package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Store reads and writes JOBS records. It is safe for concurrent use.
type Store struct {
	kv jetstream.KeyValue
}

// NewStore wraps the JOBS bucket.
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// KV is the underlying bucket, for watchers.
func (s *Store) KV() jetstream.KeyValue { return s.kv }

// Get returns the record of id and its revision, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Record, uint64, error) {
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Record{}, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("get job %s: %w", id, err)
	}
	rec, err := Decode(e.Value())
	if err != nil {
		return Record{}, 0, fmt.Errorf("job %s: %w", id, err)
	}
	return rec, e.Revision(), nil
}

// Create stores a new record, or returns ErrExists if the job already has one.
func (s *Store) Create(ctx context.Context, rec Record) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	rev, err := s.kv.Create(ctx, rec.JobID, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%w: %s", ErrExists, rec.JobID)
	}
	if err != nil {
		return 0, fmt.Errorf("create job %s: %w", rec.JobID, err)
	}
	return rev, nil
}

// Update applies fn to the record of id with compare-and-set, re-reading and retrying on a conflict. If
// fn returns an error the record is left unchanged and the error returned; if fn reports changed=false
// nothing is written.
func (s *Store) Update(ctx context.Context, id string, fn func(*Record) (changed bool, err error)) (Record, error) {
	for {
		rec, rev, err := s.Get(ctx, id)
		if err != nil {
			return Record{}, err
		}
		changed, err := fn(&rec)
		if err != nil || !changed {
			return rec, err
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return Record{}, err
		}
		_, err = s.kv.Update(ctx, id, b, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) { // nats.go maps both 10071 (R1) and 10164 (R3) to it
			if ctx.Err() != nil {
				return Record{}, ctx.Err()
			}
			continue // someone else wrote first: decide again on their version
		}
		if err != nil {
			return Record{}, fmt.Errorf("update job %s: %w", id, err)
		}
		return rec, nil
	}
}

// UpdateFrom is Update starting from a record the caller read at rev (rev 0: not read), so the
// common case, nobody wrote since, costs one write and no read. On a conflict it reads the record again
// and decides anew, as Update does.
func (s *Store) UpdateFrom(ctx context.Context, rec Record, rev uint64, fn func(*Record) (changed bool, err error)) (Record, error) {
	if rev == 0 {
		return s.Update(ctx, rec.JobID, fn)
	}
	changed, err := fn(&rec)
	if err != nil || !changed {
		return rec, err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return Record{}, err
	}
	_, err = s.kv.Update(ctx, rec.JobID, b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return s.Update(ctx, rec.JobID, fn) // someone wrote first: decide again on their version
	}
	if err != nil {
		return Record{}, fmt.Errorf("update job %s: %w", rec.JobID, err)
	}
	return rec, nil
}

// Decode parses a JOBS value.
func Decode(b []byte) (Record, error) {
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, fmt.Errorf("decode job record: %w", err)
	}
	return rec, nil
}
