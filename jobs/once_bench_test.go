package jobs_test

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
)

// The benchmarks of this file price the takeover of result fences after a mass crash: K publishers
// (verifier goroutines) claimed their jobs' fences and died before their results, M other jobs' results
// were published while the claims aged, and a restarted process then publishes the K results. Each of
// its publishes takes a stale claim over and searches the stream from the dead claim up to its own for
// a result the dead owner may have stored (none here: the worst case, the whole stretch is read). The
// baseline is the same K publishes on fresh fences. See docs/PERFORMANCE.md for the figures.
//
//	go test -run '^$' -bench FenceTakeover -benchtime 3x -count 3 ./jobs/
//	go test -run '^$' -bench 'FenceTakeover/single/K=4/M=10000/' -benchtime 1x -count 3 ./jobs/ -fence.heavy
//	go test -run '^$' -bench 'FenceTakeover/./K=64/M=(3000|10000)/takeover' -benchtime 1x ./jobs/ -fence.heavy

// fenceHeavy opts in to the takeover cells with K·M² above 10⁸ (K=4 and K=64 with M=10,000, K=64 with
// M=3,000), which take from seconds to minutes per iteration.
var fenceHeavy = flag.Bool("fence.heavy", false, "run the slow cells of BenchmarkFenceTakeover (K·M² > 1e8)")

// benchK is how many claims the crash leaves behind.
const benchK = 64

// benchTakeoverAfter is the takeover window of the benchmarks' publishers (DefaultTakeoverAfter is
// 2 s): what the timed publishes do is the same once the claims are older than the window, and the
// benchmarks wait out the window (the fault) in every iteration.
const benchTakeoverAfter = 250 * time.Millisecond

// trafficWorkers publish the M unrelated results of the setup concurrently.
const trafficWorkers = 16

type fenceBenchCase struct {
	topology testworld.Topology
	k, m     int
	crash    bool // false: the baseline, fresh fences
}

func (c fenceBenchCase) name() string {
	kind := "takeover"
	if !c.crash {
		kind = "baseline"
	}
	return fmt.Sprintf("%s/K=%d/M=%d/%s", c.topology.Name, c.k, c.m, kind)
}

// BenchmarkFenceTakeover: see the top of the file. ns/op (and ms/all-K) is the wall time of all K
// publishes; ms/takeover the mean latency of one publish, max-ms/takeover the slowest one. While they
// run, the same publisher stores other jobs' results, one every 250 ms, as the restarted process would
// go on doing (probe-ms/publish, probe-max-ms): a trickle, since every job it adds to the stream's
// current block makes the searches slower. over-5m counts the takeovers that took longer than the
// verifier's default HandlerTimeout (5 min), which would have run out of time there. cpu-cores is the CPU time of
// the whole process (the embedded servers included) over the wall time of the K publishes.
func BenchmarkFenceTakeover(b *testing.B) {
	cases := []fenceBenchCase{
		{testworld.Single, benchK, 0, false},
		{testworld.Single, benchK, 0, true},
		{testworld.Single, benchK, 1000, true},
		{testworld.Single, benchK, 3000, true},
		{testworld.Single, benchK, 10000, false},
		{testworld.Single, benchK, 10000, true},
		// One and four takeovers alone: the price of one search, and of one round of the publisher's
		// four searches at a time.
		{testworld.Single, 1, 10000, true},
		{testworld.Single, 4, 10000, true},
		{testworld.Cluster, benchK, 0, false},
		{testworld.Cluster, benchK, 0, true},
		{testworld.Cluster, benchK, 1000, true},
		{testworld.Cluster, benchK, 10000, true},
	}
	for _, c := range cases {
		b.Run(c.name(), func(b *testing.B) {
			// The takeovers' time grows about as K·M² (docs/PERFORMANCE.md): the cells past K=1,
			// M=10,000 (about 3 s) only on request.
			if c.crash && c.k*c.m*c.m > 100_000_000 && !*fenceHeavy {
				b.Skip("seconds to minutes per iteration: run with -fence.heavy")
			}
			benchFenceTakeover(b, c)
		})
	}
}

func benchFenceTakeover(b *testing.B, c fenceBenchCase) {
	// Production settings: file storage, the default 20 min duplicate window.
	w := testworld.New(b, testworld.WithTopology(c.topology))
	js, results := w.JS, w.Res.Results
	setupCtx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	var sumMean, sumWall, sumCPU, maxLat time.Duration
	var probeSum, probeMax time.Duration
	probes, over5m := 0, 0
	var failed atomic.Int64
	for b.Loop() {
		b.StopTimer()
		from := lastSeq(b, setupCtx, results) + 1
		ids := make([]string, c.k)
		for i := range ids {
			ids[i] = uuid.NewString()
		}
		var crashed time.Time
		if c.crash {
			crashAfterClaims(b, js, ids)
			crashed = time.Now()
		}
		publishTraffic(b, setupCtx, js, c.m)
		if c.crash {
			// The fault: the claims outlive the takeover window.
			if d := time.Until(crashed.Add(benchTakeoverAfter + 100*time.Millisecond)); d > 0 {
				<-time.After(d)
			}
		}
		// The restarted process: a new connection and a new publisher.
		nc, js2 := w.Connect()
		pub := jobs.NewOncePublisher(js2, contract.Default)
		pub.SetTakeoverAfter(benchTakeoverAfter)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)

		failures := make(chan string, 3*c.k)
		seqs := make([]uint64, c.k)
		errs := make([]error, c.k)
		lats := make([]time.Duration, c.k)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, id := range ids {
			wg.Go(func() {
				<-start
				t0 := time.Now()
				// A failed publish leaves the outcome unknown; the verifier retries the delivery later
				// (here after 100 ms), and the retry takes the failed claim over at once.
				for try := 1; ; try++ {
					seqs[i], errs[i] = pub.Publish(ctx, contract.Default.ResultFenceSubject(id, false), resultMsg(id, contract.SourcePoll))
					if out, ok := errors.AsType[*jobs.AlreadyPublishedError](errs[i]); ok && try > 1 {
						seqs[i], errs[i] = out.Seq, nil // stored by the failed try after all
					}
					if errs[i] == nil || try == 3 || ctx.Err() != nil {
						break
					}
					failed.Add(1)
					failures <- fmt.Sprintf("job %d, try %d: %v", i, try, errs[i])
					<-time.After(100 * time.Millisecond)
				}
				lats[i] = time.Since(t0)
			})
		}
		stopProbe := make(chan struct{})
		probeDone := make(chan probeResult, 1)
		b.StartTimer()
		cpu0 := processCPU(b)
		t0 := time.Now()
		close(start)
		go func() { probeDone <- probe(ctx, pub, stopProbe) }()
		wg.Wait()
		wall := time.Since(t0)
		cpu := processCPU(b) - cpu0
		b.StopTimer()
		close(stopProbe)
		pr := <-probeDone
		if pr.err != nil {
			b.Fatalf("probe: %v", pr.err)
		}
		probes += len(pr.lats)
		for _, l := range pr.lats {
			probeSum += l
			probeMax = max(probeMax, l)
		}
		sumCPU += cpu

		close(failures)
		for f := range failures {
			b.Logf("failed publish, retried: %s", f)
		}
		for i, err := range errs {
			if err != nil {
				b.Fatalf("job %d: publish, 3 tries: %v", i, err)
			}
		}
		var sum time.Duration
		for _, l := range lats {
			sum += l
			maxLat = max(maxLat, l)
			if l > 5*time.Minute {
				over5m++
			}
		}
		sumMean += sum / time.Duration(c.k)
		sumWall += wall
		select {
		case <-js2.PublishAsyncComplete(): // the done messages
		case <-time.After(time.Minute):
			b.Fatal("done messages not acknowledged within a minute")
		}
		found := resultsByID(b, ctx, results, from, append(slices.Clone(ids), pr.ids...))
		verifyOnce(b, ctx, results, found, ids, seqs, c.crash)
		verifyOnce(b, ctx, results, found, pr.ids, pr.seqs, false)
		cancel()
		nc.Close()
		b.StartTimer()
	}
	n := time.Duration(b.N)
	b.ReportMetric(float64(sumMean/n)/1e6, "ms/takeover")
	b.ReportMetric(float64(maxLat)/1e6, "max-ms/takeover")
	b.ReportMetric(float64(sumWall/n)/1e6, "ms/all-K")
	b.ReportMetric(float64(sumCPU)/float64(sumWall), "cpu-cores")
	b.ReportMetric(float64(failed.Load())/float64(b.N), "failed-publishes/op")
	b.ReportMetric(float64(over5m)/float64(b.N), "over-5m/op")
	if probes > 0 {
		b.ReportMetric(float64(probeSum/time.Duration(probes))/1e6, "probe-ms/publish")
		b.ReportMetric(float64(probeMax)/1e6, "probe-max-ms")
	}
}

type probeResult struct {
	ids  []string
	seqs []uint64
	lats []time.Duration
	err  error
}

// probe publishes results of new jobs through pub, one every 250 ms, until stop, and returns their ids,
// sequences and latencies.
func probe(ctx context.Context, pub *jobs.OncePublisher, stop <-chan struct{}) probeResult {
	var r probeResult
	for {
		select {
		case <-stop:
			return r
		case <-time.After(250 * time.Millisecond):
		}
		id := uuid.NewString()
		t0 := time.Now()
		seq, err := pub.Publish(ctx, contract.Default.ResultFenceSubject(id, false), resultMsg(id, contract.SourceWebhook))
		if err != nil {
			r.err = fmt.Errorf("job %s: %w", id, err)
			return r
		}
		r.ids, r.seqs, r.lats = append(r.ids, id), append(r.seqs, seq), append(r.lats, time.Since(t0))
	}
}

// processCPU is the user and system CPU time of this process so far.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// crashAfterClaims has one publisher goroutine per job claim its fence and stop right after the claim
// (runtime.Goexit in the after-claim hook): each fence ends with a bare claim, and no result is stored.
func crashAfterClaims(tb testing.TB, js jetstream.JetStream, ids []string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var claimed sync.WaitGroup
	var wg sync.WaitGroup
	for _, id := range ids {
		claimed.Add(1)
		wg.Go(func() {
			p := jobs.NewOncePublisher(js, contract.Default)
			p.SetAfterClaim(func(string, uint64) { claimed.Done(); runtime.Goexit() })
			_, err := p.Publish(ctx, contract.Default.ResultFenceSubject(id, false), resultMsg(id, contract.SourceWebhook))
			tb.Errorf("job %s: the crashing publisher returned (%v) instead of stopping after its claim", id, err)
			claimed.Done()
		})
	}
	wg.Wait()
	claimed.Wait()
	if tb.Failed() {
		tb.FailNow()
	}
}

// publishTraffic publishes m results of other jobs through the ordinary OncePublisher path and waits
// for their done messages.
func publishTraffic(tb testing.TB, ctx context.Context, js jetstream.JetStream, m int) {
	tb.Helper()
	if m == 0 {
		return
	}
	pub := jobs.NewOncePublisher(js, contract.Default)
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range trafficWorkers {
		wg.Go(func() {
			for range jobs {
				id := uuid.NewString()
				if _, err := pub.Publish(ctx, contract.Default.ResultFenceSubject(id, false), resultMsg(id, contract.SourceWebhook)); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for range m {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	if first != nil {
		tb.Fatalf("traffic: %v", first)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		tb.Fatal("traffic: done messages not acknowledged within a minute")
	}
}

// lastSeq is the stream's last sequence.
func lastSeq(tb testing.TB, ctx context.Context, s jetstream.Stream) uint64 {
	tb.Helper()
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.LastSeq
}

// resultsByID returns the stream sequences of the results (subjects results.>) stored from sequence
// "from" on whose Nats-Msg-Id is one of ids, by id.
func resultsByID(tb testing.TB, ctx context.Context, s jetstream.Stream, from uint64, ids []string) map[string][]uint64 {
	tb.Helper()
	for try := 1; ; try++ {
		found, err := readResults(ctx, s, from, ids)
		if err == nil {
			return found
		}
		// On a cluster the consumer's first pull can come before the servers know of the consumer.
		if !errors.Is(err, nats.ErrNoResponders) || try == 5 {
			tb.Fatalf("read results: %v", err)
		}
		<-time.After(100 * time.Millisecond)
	}
}

func readResults(ctx context.Context, s jetstream.Stream, from uint64, ids []string) (map[string][]uint64, error) {
	found := make(map[string][]uint64, len(ids))
	for _, id := range ids {
		found[id] = nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contract.Default.SubjectResults + ">"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
		HeadersOnly:    true,
	})
	if err != nil {
		return nil, err
	}
	for done := false; !done; {
		batch, err := cons.Fetch(1024, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			id := m.Headers().Get(jetstream.MsgIDHeader)
			if got, ok := found[id]; ok {
				found[id] = append(got, md.Sequence.Stream)
			}
			if md.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if n == 0 {
			done = true
		}
	}
	return found, nil
}

// verifyOnce checks that each of ids has exactly one result in found (resultsByID; the ids are new in
// this iteration, so none is stored before it), at the sequence its publish returned, and that its fence
// is claims (with takeover, the dead one and at least one more) and a done message naming that result.
func verifyOnce(tb testing.TB, ctx context.Context, s jetstream.Stream, found map[string][]uint64, ids []string, seqs []uint64, takeover bool) {
	tb.Helper()
	for i, id := range ids {
		if got := found[id]; !slices.Equal(got, []uint64{seqs[i]}) {
			tb.Fatalf("job %d: results at %v, want exactly one, at %d", i, got, seqs[i])
		}
		fence := contract.Default.ResultFenceSubject(id, false)
		var kinds []string
		for seq := uint64(1); ; seq++ {
			m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(fence))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				tb.Fatal(err)
			}
			k := m.Header.Get(contract.HeaderFence)
			if r := m.Header.Get(contract.HeaderResultSeq); r != "" {
				k += ":" + r
			}
			kinds = append(kinds, k)
			seq = m.Sequence
		}
		// A claim (the dead one and the takeover's, with takeover), one more for each retried publish,
		// and the done message naming the result.
		claims := 1
		if takeover {
			claims = 2
		}
		done := contract.FenceDone + ":" + strconv.FormatUint(seqs[i], 10)
		if len(kinds) < claims+1 || kinds[len(kinds)-1] != done ||
			slices.ContainsFunc(kinds[:len(kinds)-1], func(k string) bool { return k != contract.FenceClaim }) {
			tb.Fatalf("job %d: fence %v, want %d or more claims and %s", i, kinds, claims, done)
		}
	}
}
