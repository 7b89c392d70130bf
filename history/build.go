package history

import (
	"context"
	"iter"
)

// Build adds every entry, as [Store.Add] does, in chunks of 16 leaves' worth: for a bulk load
// (an upgrade from per-job records, a benchmark) rather than one id at a time. Ids in ascending order
// (lower-case strings sort as their bytes) make each chunk fill a few neighbouring leaves, so that every
// leaf is written about once: a million ids cost about 300 block writes rather than a million. Any order
// is correct, only slower. Memory stays at one chunk (about 1 MiB by default), whatever the count. It
// stops at the first error; what it added before stays added.
func (s *Store) Build(ctx context.Context, entries iter.Seq[Entry]) error {
	chunk := make([]Entry, 0, 16*s.max)
	for e := range entries {
		chunk = append(chunk, e)
		if len(chunk) < cap(chunk) {
			continue
		}
		if err := s.Add(ctx, chunk); err != nil {
			return err
		}
		chunk = chunk[:0]
	}
	if len(chunk) == 0 {
		return nil
	}
	return s.Add(ctx, chunk)
}
