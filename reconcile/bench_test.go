package reconcile

import (
	"context"
	"encoding/json"
	"flag"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
)

var benchN = flag.Int("reconcile.n", 100_000, "pending JOBS records for BenchmarkIndex")

// indexFixture is a JOBS bucket holding n pending records and an index built from it by the watch.
type indexFixture struct {
	ids        []string
	idx        *index
	bytesPer   float64
	buildTime  time.Duration
	writeTime  time.Duration
	heapBefore uint64
	heapAfter  uint64
}

// buildIndexFixture writes n pending records with async publishes, then measures the heap an index
// built from a JOBS watch holds per job.
func buildIndexFixture(tb testing.TB, n int) *indexFixture {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	world := testworld.New(tb)
	js, res := world.JS, world.Res
	f := &indexFixture{ids: make([]string, n)}
	mods := []string{"prompt", "image", "video", "chat"}
	now := time.Now().UTC()
	start := time.Now()
	for i := range n {
		id := uuid.NewString()
		f.ids[i] = id
		m := mods[i%len(mods)]
		b, _ := json.Marshal(jobs.Record{JobID: id, Modality: m, State: jobs.StatePending, Origin: jobs.OriginSubmit,
			SubmittedAt: now, Deadline: now.Add(time.Hour + time.Duration(i)*time.Millisecond)})
		if _, err := js.PublishAsync("$KV."+contract.Default.BucketJobs+"."+id, b); err != nil {
			tb.Fatalf("publish %d: %v", i, err)
		}
		if i%10_000 == 9_999 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		tb.Fatal("records not acknowledged")
	}
	f.writeTime = time.Since(start)

	m, _ := newMetrics(nil)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f.idx = newIndex(time.Hour, 30*time.Second, m)
	start = time.Now()
	w, err := res.Jobs.WatchAll(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if err := f.idx.apply(e.Key(), e.Value(), e.Operation() != jetstream.KeyValuePut, now); err != nil {
			tb.Fatal(err)
		}
	}
	f.buildTime = time.Since(start)
	_ = w.Stop()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if p, _ := f.idx.counts(); p != n {
		tb.Fatalf("index has %d pending, want %d", p, n)
	}
	f.heapBefore, f.heapAfter = before.HeapAlloc, after.HeapAlloc
	f.bytesPer = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
	return f
}

// TestIndexScaleSmall is the default-run version of BenchmarkIndex: a few thousand records.
func TestIndexScaleSmall(t *testing.T) {
	const n = 3000
	f := buildIndexFixture(t, n)
	t.Logf("%d records: written in %v, index built in %v, %.0f bytes per pending job", n, f.writeTime, f.buildTime, f.bytesPer)
	if f.bytesPer > 1024 {
		t.Fatalf("%.0f bytes per pending job, want well under 1 KiB", f.bytesPer)
	}
	// A sweep over the index: every job in flight but one.
	inflight := make(map[string]struct{}, n)
	for _, id := range f.ids[1:] {
		inflight[id] = struct{}{}
	}
	gen := f.idx.beginSweep()
	now := time.Now()
	if p := f.idx.mark(inflight, gen, now, 0); len(p.tasks) != 1 || p.tasks[0].id != f.ids[0] {
		t.Fatalf("sweep found %d missing, want %s", len(p.tasks), f.ids[0])
	}
	// Deadlines pop in order.
	due := f.idx.popDue(now.Add(time.Hour+10*time.Millisecond), 100, time.Second)
	if len(due) < 10 {
		t.Fatalf("%d due", len(due))
	}
	for i := 1; i < len(due); i++ {
		if due[i].e.due < due[i-1].e.due {
			t.Fatal("deadlines out of order")
		}
	}
}

// BenchmarkIndex measures the index at scale (-reconcile.n, default 100,000 pending records): heap bytes
// per pending job after building it from a JOBS watch, the build rate, and the CPU of one sweep's
// comparison with an in-flight list (90% of the jobs in flight), per sweep and per job.
//
//	go test -run '^$' -bench BenchmarkIndex -benchtime 20x ./reconcile/
func BenchmarkIndex(b *testing.B) {
	n := *benchN
	f := buildIndexFixture(b, n)
	inflight := make(map[string]struct{}, n)
	for i, id := range f.ids {
		if i%10 != 0 {
			inflight[id] = struct{}{}
		}
	}
	grace := time.Hour // nothing becomes a candidate, so each iteration is the same full scan
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		gen := f.idx.beginSweep()
		f.idx.mark(inflight, gen, time.Now(), grace)
	}
	b.StopTimer()
	perSweep := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(f.bytesPer, "B/pending-job")
	b.ReportMetric(float64(n)/f.buildTime.Seconds(), "jobs/s-build")
	b.ReportMetric(perSweep/1e6, "ms/sweep")
	b.ReportMetric(perSweep/float64(n), "ns/job-sweep")
	b.Logf("n=%d: records written in %v; index built in %v; heap %d → %d bytes (%.0f B/job, %.0f MiB per 1M jobs); "+
		"sweep %.1f ms (%.0f ns/job, %.0f ms per 1M jobs)", n, f.writeTime, f.buildTime, f.heapBefore, f.heapAfter,
		f.bytesPer, f.bytesPer*1e6/(1<<20), perSweep/1e6, perSweep/float64(n), perSweep/float64(n)*1e6/1e6)
	runtime.KeepAlive(f.idx)
}
