package history_test

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"iter"
	"math"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/natsx"
)

var heavy = flag.Bool("history.heavy", false, "BenchmarkHistory: also the cell of 10M ids in layout=blocks (a minute, 170 MB of disk)")

// cacheExpiry is how long nats-server's file store keeps a file block (4 MiB in a KV stream) in memory
// after its last read or write (defaultCacheBufferExpiration), and one second more.
const cacheExpiry = 11 * time.Second

// BenchmarkHistory keeps 0, 100k and 1M delivered jobs in three layouts on an embedded server:
// layout=blocks is this package's history (built with Build; with -history.heavy also 10M);
// layout=blocks-added the same filled by Adds of 1,000 ids, as compaction runs would (100k only);
// layout=tombstones is today's, a JOBS record of about 330 bytes a job (10M of them would take GBs of
// memory). It restarts the server, as a bridge start would, waits for the server to drop the file
// blocks the build left in its cache, and looks up delivered jobs. It reports per cell: the cost of one
// lookup (reads, bytes read, ns/op), the stream's bytes a job (State.Bytes) and its files on disk a
// job, its subjects, the server's restart, the build, and the Go heap after GC (the embedded server
// runs in this process, so that is nats-server's resident memory plus the benchmark's), which for
// layout=blocks should stay flat however many jobs there are.
//
//	go test -run '^$' -bench 'BenchmarkHistory/.*/ids=(0|100000)$' -benchtime 2000x ./history/
func BenchmarkHistory(b *testing.B) {
	for _, l := range []layout{blocks, added, tombstones} {
		sizes := l.sizes
		if *heavy {
			sizes = append(sizes, l.heavy...)
		}
		for _, n := range sizes {
			b.Run(fmt.Sprintf("layout=%s/ids=%d", l.name, n), func(b *testing.B) { benchLayout(b, l, n) })
		}
	}
}

// lookupFunc answers whether a job was delivered.
type lookupFunc func(ctx context.Context, jobID string) (bool, error)

// layout is one way of keeping delivered jobs in the stream called stream, measured at sizes (and
// heavy with -history.heavy): build stores n of them, and open, on a restarted server, returns the
// lookup and the count of its reads and their bytes.
type layout struct {
	name, stream string
	sizes, heavy []int
	build        func(ctx context.Context, js jetstream.JetStream, res natsx.Resources, n int) error
	open         func(tb testing.TB, res natsx.Resources) (lookupFunc, func() (reads, bytes uint64))
}

var blocks = layout{
	name:   "blocks",
	stream: contract.KVStream(contract.Default.BucketHistory),
	sizes:  []int{0, 100_000, 1_000_000},
	heavy:  []int{10_000_000},
	build: func(ctx context.Context, _ jetstream.JetStream, res natsx.Resources, n int) error {
		s, err := history.New(history.Config{KV: res.History})
		if err != nil {
			return err
		}
		return s.Build(ctx, ascendingIDs(n))
	},
	open: openBlocks,
}

// added is the history filled as compaction runs would, 1,000 ids an Add in random order, so that
// every leaf is rewritten many times (1M would rewrite each a thousand times: not measured).
var added = layout{
	name:   "blocks-added",
	stream: contract.KVStream(contract.Default.BucketHistory),
	sizes:  []int{100_000},
	build: func(ctx context.Context, _ jetstream.JetStream, res natsx.Resources, n int) error {
		s, err := history.New(history.Config{KV: res.History})
		if err != nil {
			return err
		}
		batch := make([]history.Entry, 0, 1000)
		for i := range n {
			if batch = append(batch, entryAt(n, int(uint64(i)*0x9e3779b1%uint64(n)))); len(batch) == cap(batch) || i == n-1 {
				if err := s.Add(ctx, batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		return nil
	},
	open: openBlocks,
}

func openBlocks(tb testing.TB, res natsx.Resources) (lookupFunc, func() (uint64, uint64)) {
	s := newStore(tb, res.History, 0)
	return s.Delivered, s.Reads
}

// tombstone is a delivered job's JOBS record as today's layout keeps it, about 330 bytes.
const tombstone = `{"job_id":"%s","modality":"prompt","state":"delivered","origin":"submit",` +
	`"submitted_at":"2026-12-01T10:00:00.123456789Z","deadline":"2026-12-01T10:05:00.123456789Z","attempts":1,` +
	`"source":"webhook","result_subject":"results.prompt","result_seq":1234567,` +
	`"delivered_at":"2026-12-01T10:00:02.123456789Z","last_status":"completed"}`

var tombstones = layout{
	name:   "tombstones",
	stream: contract.KVStream(contract.Default.BucketJobs),
	sizes:  []int{0, 100_000, 1_000_000}, // 10M would take GBs of memory
	build: func(ctx context.Context, js jetstream.JetStream, _ natsx.Resources, n int) error {
		for i := range n {
			id := idAt(n, i)
			if _, err := js.PublishAsync("$KV."+contract.Default.BucketJobs+"."+id, fmt.Appendf(nil, tombstone, id)); err != nil {
				return err
			}
			if i%10_000 == 9_999 {
				<-js.PublishAsyncComplete()
			}
		}
		select {
		case <-js.PublishAsyncComplete():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	},
	open: func(_ testing.TB, res natsx.Resources) (lookupFunc, func() (uint64, uint64)) {
		var reads, bytes atomic.Uint64
		lookup := func(ctx context.Context, id string) (bool, error) {
			e, err := res.Jobs.Get(ctx, id)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				reads.Add(1)
				return false, nil
			}
			if err != nil {
				return false, err
			}
			reads.Add(1)
			bytes.Add(uint64(len(e.Value())))
			return true, nil
		}
		return lookup, func() (uint64, uint64) { return reads.Load(), bytes.Load() }
	},
}

func benchLayout(b *testing.B, l layout, n int) {
	node := natstest.RunServer(b)
	ctx := natstest.CtxWithin(b, 2*time.Hour)
	js, res := provision(b, node.ClientURL())
	start := time.Now()
	if err := l.build(ctx, js, res, n); err != nil {
		b.Fatal(err)
	}
	built := time.Since(start)
	start = time.Now()
	node.Restart(b)
	restarted := time.Since(start)
	js, res = provision(b, node.ClientURL())
	lookup, reads := l.open(b, res)
	s, err := js.Stream(ctx, l.stream)
	if err != nil {
		b.Fatal(err)
	}
	state := s.CachedInfo().State
	// The caches of the build (kept alive by the stopped server's timers) and of the start-up go after
	// cacheExpiry: what remains is what the server keeps resident for the history.
	time.Sleep(cacheExpiry)
	heap := heapAfterGC()

	r0, rb0 := reads()
	i := 0
	for b.Loop() {
		id := idAt(n, i*7919%max(n, 1)) // delivered jobs all over the history (any id when there are none)
		if found, err := lookup(ctx, id); err != nil || found != (n > 0) {
			b.Fatalf("lookup(%s) = %v, %v", id, found, err)
		}
		i++
	}
	r, rb := reads()
	perID := float64(max(n, 1))
	b.ReportMetric(float64(r-r0)/float64(i), "reads/op")
	b.ReportMetric(float64(rb-rb0)/float64(i), "read-B/op")
	b.ReportMetric(float64(state.Bytes)/perID, "B/id")
	b.ReportMetric(float64(storeBytes(b, node.StoreDir(), l.stream))/perID, "disk-B/id")
	b.ReportMetric(float64(state.NumSubjects), "subjects")
	b.ReportMetric(float64(heap)/(1<<20), "heap-MB")
	b.ReportMetric(restarted.Seconds(), "restart-s")
	b.ReportMetric(built.Seconds(), "build-s")
}

// provision connects to url and provisions the bridge's streams and buckets.
func provision(tb testing.TB, url string) (jetstream.JetStream, natsx.Resources) {
	tb.Helper()
	_, js := natstest.Connect(tb, url)
	res, err := natsx.Provision(natstest.Ctx(tb), js, natsx.ProvisionConfig{})
	if err != nil {
		tb.Fatalf("provision: %v", err)
	}
	return js, res
}

// ascendingIDs are the entries of the n ids idAt(n, 0..n-1), in ascending order, made one at a time.
func ascendingIDs(n int) iter.Seq[history.Entry] {
	return func(yield func(history.Entry) bool) {
		for i := range n {
			if !yield(entryAt(n, i)) {
				return
			}
		}
	}
}

// entryAt is the entry of idAt(n, i), delivered at a time and a result sequence of its own, as the
// tombstones of the other layout say.
func entryAt(n, i int) history.Entry {
	return history.Entry{JobID: idAt(n, i), DeliveredAt: time.Date(2026, 12, 1, 10, 0, 2, 0, time.UTC).Add(time.Duration(i) * time.Second),
		ResultSeq: uint64(i + 1)}
}

// idAt is the i-th of n ids spread evenly at random over the id space (one in each n-th of it), so
// that they come in ascending order and can be made again for lookups without being kept. With n zero
// it is any id.
func idAt(n, i int) string {
	var u uuid.UUID
	width := uint64(math.MaxUint64)
	if n > 0 {
		width /= uint64(n)
	}
	binary.BigEndian.PutUint64(u[:8], uint64(i)*width+mix(uint64(i))%width)
	binary.BigEndian.PutUint64(u[8:], mix(^uint64(i)))
	return u.String()
}

// mix is splitmix64's finaliser: a fixed pseudo-random function of x.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// heapAfterGC is the live Go heap after a collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC() // sync.Pools keep their items through one collection
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// storeBytes is the size of the files of stream in the server's store directory.
func storeBytes(tb testing.TB, dir, stream string) int64 {
	tb.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !inDir(path, stream) {
			return err
		}
		info, err := d.Info()
		if err == nil {
			total += info.Size()
		}
		return err
	})
	if err != nil {
		tb.Fatalf("store dir: %v", err)
	}
	return total
}

// inDir reports whether path is under a directory called name.
func inDir(path, name string) bool {
	for dir := filepath.Dir(path); dir != "." && dir != string(filepath.Separator); dir = filepath.Dir(dir) {
		if filepath.Base(dir) == name {
			return true
		}
	}
	return false
}
