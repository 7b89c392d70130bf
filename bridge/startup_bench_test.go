package bridge

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"iter"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream/simulator"
)

var startupHeavy = flag.Bool("startup.heavy", false, "BenchmarkStartup: also 10M delivered jobs in the history (about 10 s to build, 330 MB of disk)")

// startupCacheExpiry is how long nats-server's file store keeps a file block in memory after its last
// read or write, and one second more (as history's BenchmarkHistory waits).
const startupCacheExpiry = 11 * time.Second

// startupCell is one store the bridge starts on: n delivered jobs kept in layout.
type startupCell struct {
	layout string // "history": layout 2, the jobs in BRIDGE_HISTORY; "tombstones": layout 1, a JOBS record a job
	n      int
}

// BenchmarkStartup starts the whole bridge (New and Run, every role, the embedded default nats-server on
// a store directory) on a store that already holds n delivered jobs, and times it from the call to New
// until /readyz first answers 200, which needs every role serving (the JOBS watch replayed included).
// Each iteration is one start and one clean stop on the same store; ready-s is their mean, ready-min-s and
// ready-max-s their range. After the iterations the bridge starts once more, on a process that has
// returned its free memory to the OS, and, once the server's file store has dropped the blocks the start
// read (11 s), reports the Go heap after GC (the embedded server runs in this process, so this is the
// bridge's and nats-server's resident heap together), the process's RSS then (rss-MB, with what the Go
// runtime has not yet returned), and its peak RSS since just before that start (peak-rss-MB).
//
// The jobs are written straight into the store before the first start, not run through the bridge:
//   - layout=history: a store of this release (layout 2) with n jobs in the history (history.Build), JOBS
//     empty, as after compaction;
//   - layout=tombstones: a store of the earlier release (layout 1, JOBS without LimitMarkerTTL), with a
//     delivered JOBS record of about 330 bytes a job, an hour old, which every start's JOBS watch replays
//     and this release's compactor holds (the baseline: start-up as it grows with the history).
//
// With -startup.heavy also 10M jobs in the history.
//
//	go test -run '^$' -bench BenchmarkStartup -benchtime 3x -timeout 30m ./bridge/ -args -startup.heavy
func BenchmarkStartup(b *testing.B) {
	cells := []startupCell{{"history", 0}, {"history", 1_000_000}, {"tombstones", 100_000}, {"tombstones", 200_000}}
	if *startupHeavy {
		cells = append(cells, startupCell{"history", 10_000_000})
	}
	for _, c := range cells {
		b.Run(fmt.Sprintf("layout=%s/jobs=%d", c.layout, c.n), func(b *testing.B) { benchStartup(b, c) })
	}
}

func benchStartup(b *testing.B, c startupCell) {
	dir := b.TempDir()
	sim := simtest.Run(b, simulator.Config{})
	cfg := Config{
		DataDir: dir, NATSListen: "127.0.0.1:-1", HTTPAddr: "127.0.0.1:0", APIURL: sim.URL(), APIKey: simulator.DefaultKey,
		APIRPM: 6000, TimeoutPrompt: 5 * time.Minute, TimeoutImage: 5 * time.Minute, TimeoutVideo: 15 * time.Minute,
		TimeoutChat: 5 * time.Minute, PollInterval: 30 * time.Second, WebhookGrace: 10 * time.Second,
		MaxBody: 64 << 10, DuplicateWindow: 20 * time.Minute, Retention: time.Hour, Replicas: 1,
		Roles: allRoles[:], LogLevel: "info", LogFormat: "json",
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	built := fillStore(b, cfg, c)

	var total, least, most time.Duration
	for b.Loop() {
		stop, ready := startAndWaitReady(b, cfg)
		stop()
		total += ready
		if least == 0 || ready < least {
			least = ready
		}
		most = max(most, ready)
	}
	b.StopTimer()
	// The file stores of the build and of the starts above keep their caches for startupCacheExpiry after
	// they stop; then what they left is returned to the OS, so that the RSS below is the last start's.
	time.Sleep(startupCacheExpiry)
	startupHeapAfterGC()
	debug.FreeOSMemory()
	resetPeakRSS(b)
	stop, _ := startAndWaitReady(b, cfg)
	time.Sleep(startupCacheExpiry) // the transient cache of the start-up goes; what remains is resident
	heap := startupHeapAfterGC()
	rss, peak := procStatus(b, "VmRSS:"), procStatus(b, "VmHWM:")
	stop()

	b.ReportMetric(total.Seconds()/float64(b.N), "ready-s")
	b.ReportMetric(least.Seconds(), "ready-min-s")
	b.ReportMetric(most.Seconds(), "ready-max-s")
	b.ReportMetric(float64(heap)/(1<<20), "heap-MB")
	b.ReportMetric(float64(rss)/(1<<20), "rss-MB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MB")
	b.ReportMetric(built.Seconds(), "build-s")
}

// startAndWaitReady starts the App on cfg and returns a func that stops it and the time from the call to
// New until /readyz first answered 200.
func startAndWaitReady(b *testing.B, cfg Config) (stop func(), ready time.Duration) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	a, err := New(ctx, cfg, zerolog.Nop())
	if err != nil {
		cancel()
		b.Fatalf("new app: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop = func() {
		cancel()
		if err := natstest.RecvWithin(b, done, 60*time.Second); err != nil {
			b.Fatalf("app: %v", err)
		}
	}
	url := "http://" + a.Addr().String() + "/readyz"
	hc := &http.Client{Timeout: time.Second}
	// Polled every millisecond, the resolution of the figure; a start slower than a minute is a failure.
	for deadline := start.Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if resp, err := hc.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop, time.Since(start)
			}
		}
		if time.Now().After(deadline) {
			stop()
			b.Fatalf("/readyz not 200 within a minute")
		}
	}
}

// fillStore writes c's delivered jobs into the store directory of cfg, on the embedded server the App
// starts, and returns how long that took.
func fillStore(b *testing.B, cfg Config, c startupCell) time.Duration {
	b.Helper()
	srv, err := natsx.RunEmbedded(natsx.ServerConfig{Listen: "127.0.0.1:-1", StoreDir: cfg.DataDir, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if c.layout == "tombstones" {
		// JOBS as the earlier release made it, before this release provisions the rest.
		if _, err := js.CreateKeyValue(ctx, testworld.EarlierJobs(1)); err != nil {
			b.Fatal(err)
		}
	}
	res, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{DuplicateWindow: cfg.DuplicateWindow, Retention: cfg.Retention})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	switch c.layout {
	case "history":
		s, err := history.New(history.Config{KV: res.History})
		if err == nil {
			err = s.Build(ctx, startupEntries(c.n))
		}
		if err != nil {
			b.Fatal(err)
		}
	case "tombstones":
		writeTombstones(b, ctx, js, c.n)
	}
	return time.Since(start)
}

// writeTombstones writes n delivered JOBS records, delivered an hour ago, as the earlier release left them.
func writeTombstones(b *testing.B, ctx context.Context, js jetstream.JetStream, n int) {
	b.Helper()
	at := time.Now().Add(-time.Hour).UTC()
	for i := range n {
		id := startupID(n, i)
		rec := jobs.Record{JobID: id, Modality: "prompt", State: jobs.StateDelivered, Origin: jobs.OriginSubmit,
			SubmittedAt: at.Add(-time.Second), Deadline: at.Add(time.Minute), Attempts: 1, Source: contract.SourceWebhook,
			ResultSubject: contract.Default.ResultSubject("prompt"), ResultSeq: uint64(i + 1), DeliveredAt: &at, LastStatus: "completed"}
		v, err := json.Marshal(rec)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(contract.KVSubject(contract.Default.BucketJobs, id), v); err != nil {
			b.Fatalf("tombstone %d of %d: %v", i, n, err)
		}
		// Fewer in flight than nats.go's limit of pending async publishes (4,000): past it a publish stalls,
		// and fails after 200 ms on a busy box.
		if i%2_000 == 1_999 || i == n-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			}
		}
	}
}

// startupEntries are the history entries of the n ids startupID(n, 0..n-1), in ascending order of id.
func startupEntries(n int) iter.Seq[history.Entry] {
	at := time.Now().Add(-time.Hour)
	return func(yield func(history.Entry) bool) {
		for i := range n {
			if !yield(history.Entry{JobID: startupID(n, i), DeliveredAt: at, ResultSeq: uint64(i + 1)}) {
				return
			}
		}
	}
}

// startupID is the i-th of n ids spread over the id space, one in each n-th of it, so that they come in
// ascending order without being kept (as history's benchmark makes them).
func startupID(n, i int) string {
	var u uuid.UUID
	width := uint64(math.MaxUint64) / uint64(max(n, 1))
	binary.BigEndian.PutUint64(u[:8], uint64(i)*width+startupMix(uint64(i))%width)
	binary.BigEndian.PutUint64(u[8:], startupMix(^uint64(i)))
	return u.String()
}

// startupMix is splitmix64's finaliser: a fixed pseudo-random function of x.
func startupMix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// startupHeapAfterGC is the live Go heap after a collection.
func startupHeapAfterGC() uint64 {
	runtime.GC()
	runtime.GC() // sync.Pools keep their items through one collection
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// procStatus is the size in bytes of field ("VmRSS:", "VmHWM:") in /proc/self/status.
func procStatus(tb testing.TB, field string) uint64 {
	tb.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// resetPeakRSS sets the process's peak RSS (VmHWM) to its RSS now (Linux's clear_refs, value 5).
func resetPeakRSS(tb testing.TB) {
	tb.Helper()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		tb.Fatalf("reset peak RSS: %v", err)
	}
}
