package testworld

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

// Compact moves the delivered jobs ids out of the hot state into the history, the way the compactor does
// and in its order (docs/DESIGN.md, History): each id into the history first, then its JOBS record
// deleted and its result fences (bridge.result.<id> and its .late) purged from RESULTS.
func (e *World) Compact(ids ...string) {
	e.TB.Helper()
	ctx := natstest.CtxWithin(e.TB, 30*time.Second)
	if err := e.History.Add(ctx, ids); err != nil {
		e.TB.Fatalf("testworld: compact: %v", err)
	}
	results, err := e.JS.Stream(ctx, contract.StreamResults)
	if err != nil {
		e.TB.Fatalf("testworld: compact: %v", err)
	}
	for _, id := range ids {
		if err := e.Store.KV().Delete(ctx, id); err != nil {
			e.TB.Fatalf("testworld: compact %s: delete record: %v", id, err)
		}
		for _, late := range []bool{false, true} {
			if err := results.Purge(ctx, jetstream.WithPurgeSubject(contract.ResultFenceSubject(id, late))); err != nil {
				e.TB.Fatalf("testworld: compact %s: purge fence: %v", id, err)
			}
		}
	}
}
