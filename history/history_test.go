package history_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/natstest"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	kv := bucket(t, n.ClientURL(), 1)
	tests := []struct {
		name    string
		cfg     history.Config
		wantErr error
	}{
		{"defaults", history.Config{KV: kv}, nil},
		{"smallest leaves", history.Config{KV: kv, MaxBlockIDs: 2}, nil},
		{"no bucket", history.Config{}, history.ErrInvalidConfig},
		{"one id a leaf", history.Config{KV: kv, MaxBlockIDs: 1}, history.ErrInvalidConfig},
		{"leaves over 512 KiB", history.Config{KV: kv, MaxBlockIDs: 32769}, history.ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := history.New(tt.cfg); !errors.Is(err, tt.wantErr) {
				t.Errorf("New: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestAddThenLookup: an added job is delivered, in whatever case its id comes; another is not; a
// malformed id is refused and writes nothing.
func TestAddThenLookup(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	s := newStore(t, bucket(t, n.ClientURL(), 1), 0)
	ctx := natstest.Ctx(t)
	if err := s.Add(ctx, entries([]string{
		"7b0c6f3e-2a41-4c55-9d1e-0f6a3b2c1d00",
		"7B0C6F3E-2A41-4C55-9D1E-0F6A3B2C1D01",
		"00000000-0000-4000-8000-000000000000",
		"ffffffff-ffff-4fff-bfff-ffffffffffff",
	})); err != nil {
		t.Fatal(err)
	}
	lookupAll(t, s, []string{
		"7b0c6f3e-2a41-4c55-9d1e-0f6a3b2c1d00",
		"7B0C6F3E-2A41-4C55-9D1E-0F6A3B2C1D00",
		"7b0c6f3e-2a41-4c55-9d1e-0f6a3b2c1d01",
		"00000000-0000-4000-8000-000000000000",
		"ffffffff-ffff-4fff-bfff-ffffffffffff",
	}, true)
	lookupAll(t, s, []string{"7b0c6f3e-2a41-4c55-9d1e-0f6a3b2c1d02", "7b0c6f3e-2a41-4c55-9d1e-0f6a3b2c1cff"}, false)
	census(t, s, 4)

	for _, bad := range []string{"", "job-1", "7b0c6f3e2a414c559d1e0f6a3b2c1d00", "{7b0c6f3e-2a41-4c55-9d1e-0f6a3b2c1d00}",
		"urn:uuid:7b0c6f3e-2a41-4c55-9d1e-0f6a3b2c1d00", "7b0c6f3e-2a41-4c55-9d1e-0f6a3b2c1dzz"} {
		if _, _, err := s.Lookup(ctx, bad); !errors.Is(err, history.ErrInvalidID) {
			t.Errorf("Lookup(%q): %v, want ErrInvalidID", bad, err)
		}
		if err := s.Add(ctx, entries([]string{"11111111-1111-4111-8111-111111111111", bad})); !errors.Is(err, history.ErrInvalidID) {
			t.Errorf("Add(%q): %v, want ErrInvalidID", bad, err)
		}
	}
	lookupAll(t, s, []string{"11111111-1111-4111-8111-111111111111"}, false)
}

// TestAddTwiceWritesNothing: adding ids already there, in another order and with repeats, writes no
// block and changes nothing.
func TestAddTwiceWritesNothing(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	s := newStore(t, bucket(t, n.ClientURL(), 1), 8)
	ctx := natstest.Ctx(t)
	ids := randomIDs(1, 100)
	if err := s.Add(ctx, entries(ids)); err != nil {
		t.Fatal(err)
	}
	before := census(t, s, 100)
	writes := 0
	s.SetBeforeWrite(func(string, bool) error { writes++; return nil })
	again := append(slices.Clone(ids[50:]), ids...)
	slices.Reverse(again)
	if err := s.Add(ctx, entries(again)); err != nil {
		t.Fatal(err)
	}
	if writes != 0 {
		t.Errorf("adding the same ids again wrote %d blocks, want 0", writes)
	}
	if after := census(t, s, 100); after != before {
		t.Errorf("census %+v after adding again, was %+v", after, before)
	}
	lookupAll(t, s, ids, true)
}

// TestCorruptBlocksAreRefused: a block that is neither a split marker nor a leaf of sorted ids, or a
// leaf holding an id of another prefix, is an error, never an answer.
func TestCorruptBlocksAreRefused(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	ctx := natstest.Ctx(t)
	const id = "20000000-0000-4000-8000-000000000002"
	leaf := func(ids ...byte) []byte { // a leaf of entries whose id's first byte is each of ids, the rest zero
		v := []byte{3}
		for _, b := range ids {
			v = append(v, append([]byte{b}, make([]byte, 31)...)...)
		}
		return v
	}
	idsLeaf := func(ids ...byte) []byte { // the same as a leaf of ids alone, as the first history wrote them
		v := []byte{1}
		for _, b := range ids {
			v = append(v, append([]byte{b}, make([]byte, 15)...)...)
		}
		return v
	}
	tests := []struct {
		name     string
		blocks   map[string][]byte
		walkOnly bool // found by a walk only: a lookup or add of id never reads the bad leaf's ids
	}{
		{"empty value", map[string][]byte{"b": {}}, false},
		{"unknown kind", map[string][]byte{"b": {4}}, false},
		{"leaf cut short", map[string][]byte{"b": leaf(0x10)[:17]}, false},
		{"leaf of ids cut short", map[string][]byte{"b": idsLeaf(0x10)[:9]}, false},
		{"leaf of ids out of order", map[string][]byte{"b": idsLeaf(0x30, 0x10)}, false},
		{"leaf out of order", map[string][]byte{"b": leaf(0x30, 0x10)}, false},
		{"leaf repeating an id", map[string][]byte{"b": leaf(0x10, 0x10)}, false},
		{"leaf of another prefix", map[string][]byte{"b": {2}, "b.2": leaf(0x10)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv := bucket(t, n.ClientURL(), 1)
			for k, v := range tt.blocks {
				if _, err := kv.Put(ctx, k, v); err != nil {
					t.Fatal(err)
				}
			}
			s := newStore(t, kv, 0)
			if _, err := s.Census(ctx); !errors.Is(err, history.ErrCorrupt) {
				t.Errorf("Census: %v, want ErrCorrupt", err)
			}
			if !tt.walkOnly {
				if _, _, err := s.Lookup(ctx, id); !errors.Is(err, history.ErrCorrupt) {
					t.Errorf("Lookup: %v, want ErrCorrupt", err)
				}
				if err := s.Add(ctx, entries([]string{id})); !errors.Is(err, history.ErrCorrupt) {
					t.Errorf("Add: %v, want ErrCorrupt", err)
				}
			}
			for k := range tt.blocks {
				if err := kv.Purge(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestEntriesKeepTheirDelivery: a lookup returns the delivery time (to the millisecond) and result
// sequence added with an id, across a split; a second add of an id keeps the first entry; a leaf of ids
// alone, as the first history wrote them, is read (delivery unknown) and rewritten with entries.
func TestEntriesKeepTheirDelivery(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	ctx := natstest.Ctx(t)
	kv := bucket(t, n.ClientURL(), 1)
	const old = "10000000-0000-4000-8000-000000000001"
	u := uuid.MustParse(old)
	v := append([]byte{1}, u[:]...)
	if _, err := kv.Put(ctx, "b", v); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, kv, 2)
	at := time.Date(2026, 12, 6, 9, 30, 15, 123_456_789, time.UTC)
	add := []history.Entry{
		{JobID: "20000000-0000-4000-8000-000000000002", DeliveredAt: at, ResultSeq: 42},
		{JobID: "30000000-0000-4000-8000-000000000003", DeliveredAt: at.Add(time.Hour), ResultSeq: 43},
		{JobID: old, DeliveredAt: at, ResultSeq: 7}, // already there: keeps its entry
	}
	if err := s.Add(ctx, add); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(ctx, []history.Entry{{JobID: "20000000-0000-4000-8000-000000000002", DeliveredAt: at.Add(time.Minute), ResultSeq: 99}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []history.Entry{
		{JobID: "20000000-0000-4000-8000-000000000002", DeliveredAt: time.Date(2026, 12, 6, 9, 30, 15, 123_000_000, time.UTC), ResultSeq: 42},
		{JobID: "30000000-0000-4000-8000-000000000003", DeliveredAt: time.Date(2026, 12, 6, 10, 30, 15, 123_000_000, time.UTC), ResultSeq: 43},
		{JobID: old},
	} {
		got, ok, err := s.Lookup(ctx, strings.ToUpper(want.JobID))
		if err != nil || !ok || got != want {
			t.Errorf("Lookup(%s) = %+v, %v, %v; want %+v", want.JobID, got, ok, err, want)
		}
	}
	census(t, s, 3)
	if e, err := kv.Get(ctx, "b"); err != nil || !bytes.Equal(e.Value(), []byte{2}) {
		t.Fatalf("root after three entries with leaves of two: %v %v, want a split marker", e, err)
	}
}

// TestSplitsAcrossLevels: with two ids a leaf, three ids sharing "abc" split the root and the blocks
// of a, ab and abc; the layout is the one of the package documentation, and every id is found.
func TestSplitsAcrossLevels(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	kv := bucket(t, n.ClientURL(), 1)
	s := newStore(t, kv, 2)
	ctx := natstest.Ctx(t)
	ids := []string{
		"abc00000-0000-4000-8000-000000000001",
		"abc10000-0000-4000-8000-000000000002",
		"abc20000-0000-4000-8000-000000000003",
		"12300000-0000-4000-8000-000000000004",
	}
	for _, batch := range [][]string{ids[:1], ids[1:2], ids[2:]} { // the root a leaf of 1, of 2, then split
		if err := s.Add(ctx, entries(batch)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int{ // key: value length (1: a split marker; 33: a leaf of one entry)
		"b": 1, "b.a": 1, "b.ab": 1, "b.abc": 1,
		"b.abc0": 33, "b.abc1": 33, "b.abc2": 33, "b.1": 33,
	}
	for k, size := range want {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatalf("block %s: %v", k, err)
		}
		if v := e.Value(); len(v) != size || (size == 1) != (v[0] == 2) || (size == 33) != (v[0] == 3) {
			t.Errorf("block %s = % x, want %d bytes", k, v, size)
		}
	}
	if c := census(t, s, 4); c.Leaves != 4 || c.Splits != 4 {
		t.Errorf("census %+v, want 4 leaves and 4 splits", c)
	}
	lookupAll(t, s, ids, true)
	lookupAll(t, s, []string{
		"abc30000-0000-4000-8000-000000000001", // b.abc3 does not exist
		"abd00000-0000-4000-8000-000000000001", // nor b.abd
		"12300000-0000-4000-8000-000000000005", // b.1 exists without it
	}, false)
}

// TestSplitRacingAnAddLosesNothing: a writer adds to a leaf while another is splitting it (children
// written, marker not yet): the splitter's marker loses its compare-and-set, and it splits again with
// the other's id.
func TestSplitRacingAnAddLosesNothing(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	a := newStore(t, bucket(t, n.ClientURL(), 1), 2)
	b := newStore(t, bucket(t, n.ClientURL(), 1), 2)
	ctx := natstest.Ctx(t)
	if err := a.Add(ctx, entries([]string{"10000000-0000-4000-8000-000000000001"})); err != nil {
		t.Fatal(err)
	}
	raced := false
	a.SetBeforeWrite(func(key string, split bool) error {
		if key != "b" || !split || raced {
			return nil
		}
		raced = true // a has written the children, and the root is still the leaf of one id: b adds
		return b.Add(ctx, entries([]string{"40000000-0000-4000-8000-000000000004"}))
	})
	if err := a.Add(ctx, entries([]string{"20000000-0000-4000-8000-000000000002", "30000000-0000-4000-8000-000000000003"})); err != nil {
		t.Fatal(err)
	}
	if !raced {
		t.Fatal("the root was never split")
	}
	lookupAll(t, b, []string{
		"10000000-0000-4000-8000-000000000001", "20000000-0000-4000-8000-000000000002",
		"30000000-0000-4000-8000-000000000003", "40000000-0000-4000-8000-000000000004",
	}, true)
	census(t, b, 4)
}

// TestConcurrentWritersLoseNothing: two processes (connections) add overlapping sets at once, in small
// batches into small leaves, so that they race on leaves and splits; every id is found once.
func TestConcurrentWritersLoseNothing(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	ids := randomIDs(2, 1200)
	sets := [][]string{ids[:800], ids[400:]}
	errs := make(chan error, len(sets))
	for _, set := range sets {
		s := newStore(t, bucket(t, n.ClientURL(), 1), 16)
		go func() {
			ctx := natstest.Ctx(t)
			for batch := range slices.Chunk(set, 40) {
				if err := s.Add(ctx, entries(batch)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range sets {
		if err := natstest.RecvWithin(t, errs, natstest.Timeout); err != nil {
			t.Fatal(err)
		}
	}
	s := newStore(t, bucket(t, n.ClientURL(), 1), 16)
	lookupAll(t, s, ids, true)
	lookupAll(t, s, randomIDs(3, 200), false)
	census(t, s, 1200)
}

var errCrash = errors.New("stopped here")

// TestCrashMidSplit: a split stopped after some of its children, or right before its marker, leaves
// the leaf with every id it held (lookups stay right) and its children unreachable; the next add to the
// leaf splits it again, and then nothing is lost, nothing doubled, and no block is left unreachable.
func TestCrashMidSplit(t *testing.T) {
	t.Parallel()
	held := []string{
		"10000000-0000-4000-8000-000000000001", "20000000-0000-4000-8000-000000000002",
		"30000000-0000-4000-8000-000000000003", "40000000-0000-4000-8000-000000000004",
	}
	const interrupted, next = "50000000-0000-4000-8000-000000000005", "60000000-0000-4000-8000-000000000006"
	tests := []struct {
		name     string
		stopAt   func(key string, split bool, writes int) bool
		orphans  uint64 // children written before the stop
		retry    []string
		wantIDs  uint64
		wantSeen []string
	}{
		{"after two children, the same add again", func(_ string, _ bool, w int) bool { return w == 3 }, 2,
			[]string{interrupted}, 5, append(slices.Clone(held), interrupted)},
		{"before the marker, the same add again", func(k string, split bool, _ int) bool { return k == "b" && split }, 5,
			[]string{interrupted}, 5, append(slices.Clone(held), interrupted)},
		{"before the marker, another add", func(k string, split bool, _ int) bool { return k == "b" && split }, 5,
			[]string{next}, 6, append(slices.Clone(held), interrupted, next)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := natstest.RunServer(t)
			kv := bucket(t, n.ClientURL(), 1)
			s := newStore(t, kv, 4)
			ctx := natstest.Ctx(t)
			if err := s.Add(ctx, entries(held)); err != nil {
				t.Fatal(err)
			}
			writes := 0
			s.SetBeforeWrite(func(key string, split bool) error {
				if writes++; tt.stopAt(key, split, writes) {
					return errCrash
				}
				return nil
			})
			if err := s.Add(ctx, entries([]string{interrupted})); !errors.Is(err, errCrash) {
				t.Fatalf("add stopped mid-split: %v, want the failpoint's error", err)
			}
			if e, err := kv.Get(ctx, "b"); err != nil || len(e.Value()) != 1+4*32 || e.Value()[0] != 3 {
				t.Fatalf("root after the stop: %v, want the leaf of 4 ids", err)
			}
			lookupAll(t, s, held, true)
			if st, err := s.Stats(ctx); err != nil || st.Blocks != 1+tt.orphans {
				t.Errorf("blocks stored after the stop: %+v, %v; want the root and %d children", st, err, tt.orphans)
			}

			after := newStore(t, bucket(t, n.ClientURL(), 1), 4) // another process, after the crash
			if err := after.Add(ctx, entries(tt.retry)); err != nil {
				t.Fatal(err)
			}
			lookupAll(t, after, tt.wantSeen, true)
			if c := census(t, after, tt.wantIDs); c.Splits != 1 {
				t.Errorf("census %+v, want the root split", c)
			}
		})
	}
}

// TestHistorySurvivesRestart: what was added is found after the server restarts, by a new connection.
func TestHistorySurvivesRestart(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	ids := randomIDs(4, 1000)
	if err := newStore(t, bucket(t, n.ClientURL(), 1), 64).Add(natstest.Ctx(t), entries(ids)); err != nil {
		t.Fatal(err)
	}
	n.Restart(t)
	s := newStore(t, bucket(t, n.ClientURL(), 1), 64)
	lookupAll(t, s, ids, true)
	lookupAll(t, s, randomIDs(5, 100), false)
	census(t, s, 1000)
}

// TestBytesAndSubjectsPerID: 100k delivered jobs, added in batches as a compactor would, cost at most
// 40 bytes each in the bucket's stream and at most 0.01 subjects each in the server's index (issue 22).
func TestBytesAndSubjectsPerID(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	s := newStore(t, bucket(t, n.ClientURL(), 1), 0)
	ctx := natstest.Ctx(t)
	const count = 100_000
	ids := randomIDs(6, count)
	for batch := range slices.Chunk(ids, 25_000) {
		if err := s.Add(ctx, entries(batch)); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bytesPerID, subjectsPerID := float64(st.Bytes)/count, float64(st.Subjects)/count
	t.Logf("%d ids: %d blocks, %d bytes (%.2f a job), %d subjects (%.4f a job)", count, st.Blocks, st.Bytes, bytesPerID, st.Subjects, subjectsPerID)
	if bytesPerID > 40 || subjectsPerID > 0.01 {
		t.Errorf("%.2f bytes and %.4f subjects a job, want at most 40 and 0.01", bytesPerID, subjectsPerID)
	}
	census(t, s, count)
	lookupAll(t, s, ids[:1000], true)
}

// TestClusterR3: on a 3-node cluster, what one process added through one node is found at once by
// another process connected to another node, splits included.
func TestClusterR3(t *testing.T) {
	t.Parallel()
	c := natstest.RunCluster(t, 3)
	writer := newStore(t, bucket(t, c[0].ClientURL(), 3), 16)
	reader := newStore(t, bucket(t, c[2].ClientURL(), 3), 16)
	ctx := natstest.Ctx(t)
	ids := randomIDs(7, 600)
	for i, batch := range slices.Collect(slices.Chunk(ids, 100)) {
		if err := writer.Add(ctx, entries(batch)); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		lookupAll(t, reader, batch, true)
	}
	census(t, reader, 600)
	if st, err := reader.Stats(ctx); err != nil || st.Subjects != st.Blocks {
		t.Errorf("stats %+v, %v: want one subject a block", st, err)
	}
}

// TestBuild: a bulk load in ascending order, then one over it in any order with repeats, adds exactly
// the union.
func TestBuild(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	s := newStore(t, bucket(t, n.ClientURL(), 1), 16) // chunks of 256 ids
	ctx := natstest.Ctx(t)
	ids := randomIDs(8, 1000)
	sorted := slices.Sorted(slices.Values(ids[:700]))
	if err := s.Build(ctx, slices.Values(entries(sorted))); err != nil {
		t.Fatal(err)
	}
	census(t, s, 700)
	if err := s.Build(ctx, slices.Values(entries(ids))); err != nil {
		t.Fatal(err)
	}
	census(t, s, 1000)
	lookupAll(t, s, ids, true)
	if err := s.Build(ctx, slices.Values(entries([]string{"not-an-id"}))); !errors.Is(err, history.ErrInvalidID) {
		t.Errorf("Build of a malformed id: %v, want ErrInvalidID", err)
	}
}
