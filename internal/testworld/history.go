package testworld

import (
	"time"

	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/jobs"
)

// Compact moves the delivered jobs ids out of the hot state into the history by the compactor's own
// steps and in its order (docs/DESIGN.md, History): the ids into the history first, then each job's
// Idempotency-Key's entry, JOBS key and result fences removed by jobs.HotState.RemoveKey and Remove.
func (e *World) Compact(ids ...string) {
	e.TB.Helper()
	ctx := natstest.CtxWithin(e.TB, 30*time.Second)
	revs := make([]uint64, len(ids))
	hashes := make([]string, len(ids))
	entries := make([]history.Entry, 0, len(ids))
	for i, id := range ids {
		rec, rev, err := e.Store.Get(ctx, id)
		if err != nil {
			e.TB.Fatalf("testworld: compact %s: read record: %v", id, err)
		}
		revs[i], hashes[i] = rev, rec.KeyHash()
		entries = append(entries, rec.HistoryEntry())
		if key, ok := rec.KeyHistoryEntry(); ok {
			entries = append(entries, key)
		}
	}
	if err := e.History.Add(ctx, entries); err != nil {
		e.TB.Fatalf("testworld: compact: %v", err)
	}
	hot := jobs.HotState{Jobs: e.Res.JobsStream, Results: e.Res.Results, Idempotency: e.Res.IdempotencyStream}
	for i, id := range ids {
		if err := hot.RemoveKey(ctx, hashes[i]); err != nil {
			e.TB.Fatalf("testworld: %v", err)
		}
		if err := hot.Remove(ctx, id, revs[i]); err != nil {
			e.TB.Fatalf("testworld: %v", err)
		}
	}
}
