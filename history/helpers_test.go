package history_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/natsx"
)

// bucket connects to urls and provisions the bridge's streams and buckets, as every process does at
// start-up, returning BRIDGE_HISTORY.
func bucket(tb testing.TB, urls string, replicas int) jetstream.KeyValue {
	tb.Helper()
	_, js := natstest.Connect(tb, urls)
	res, err := natsx.Provision(natstest.Ctx(tb), js, natsx.ProvisionConfig{Replicas: replicas})
	if err != nil {
		tb.Fatalf("provision: %v", err)
	}
	return res.History
}

// newStore is a Store on kv with leaves of at most maxIDs ids (0: the default).
func newStore(tb testing.TB, kv jetstream.KeyValue, maxIDs int) *history.Store {
	tb.Helper()
	s, err := history.New(history.Config{KV: kv, MaxBlockIDs: maxIDs})
	if err != nil {
		tb.Fatalf("history.New: %v", err)
	}
	return s
}

// randomIDs are n distinct random job ids, the same for the same seed.
func randomIDs(seed uint64, n int) []string {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	seen := make(map[uuid.UUID]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		var u uuid.UUID
		binary.BigEndian.PutUint64(u[:8], r.Uint64())
		binary.BigEndian.PutUint64(u[8:], r.Uint64())
		u[6], u[8] = u[6]&0x0f|0x40, u[8]&0x3f|0x80 // version 4, RFC 4122 variant, as the upstream's
		if !seen[u] {
			seen[u] = true
			out = append(out, u.String())
		}
	}
	return out
}

// lookupAll fails the test for each id of ids whose lookup is not want.
func lookupAll(tb testing.TB, s *history.Store, ids []string, want bool) {
	tb.Helper()
	ctx := natstest.Ctx(tb)
	for _, id := range ids {
		_, got, err := s.Lookup(ctx, id)
		if err != nil || got != want {
			tb.Fatalf("Lookup(%s) = %v, %v; want %v", id, got, err, want)
		}
	}
}

// census walks s and fails the test unless it finds ids ids and every stored block is reachable (no
// child left behind by an interrupted split).
func census(tb testing.TB, s *history.Store, ids uint64) history.Census {
	tb.Helper()
	ctx := natstest.Ctx(tb)
	c, err := s.Census(ctx)
	if err != nil {
		tb.Fatalf("census: %v", err)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		tb.Fatalf("stats: %v", err)
	}
	if c.IDs != ids || c.Leaves+c.Splits != st.Blocks {
		tb.Fatalf("census %+v with %d blocks stored; want %d ids, every block reachable", c, st.Blocks, ids)
	}
	return c
}

// entries are the history entries of ids: each delivered at a time and a result sequence of its own.
func entries(ids []string) []history.Entry {
	out := make([]history.Entry, len(ids))
	for i, id := range ids {
		out[i] = history.Entry{JobID: id, DeliveredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Millisecond), ResultSeq: uint64(i + 1)}
	}
	return out
}
