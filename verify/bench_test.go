package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// BenchmarkVerify measures the verifier draining a backlog of b.N webhooks of finished jobs (submitted
// as through the bridge: each has its pending JOBS record) against an upstream answering GET /job in
// 50 ms with no budget: verified results per second, and the latency
// from the webhook's received-at to the result being stored in RESULTS. All webhooks are received
// (stamped) just before the timer starts, so the latency includes the time each waited in the backlog.
//
// Concurrency adaptive is the default (Config.Concurrency 0); 64 was the old fixed default.
//
// The paced case instead starts the verifier first and stamps and publishes one webhook every 5 ms
// (200/s, well under capacity): its latency is the per-webhook cost without a backlog.
func BenchmarkVerify(b *testing.B) {
	for _, bc := range []struct {
		conc  int
		paced time.Duration
	}{{0, 0}, {64, 0}, {256, 0}, {1024, 0}, {0, 5 * time.Millisecond}} {
		conc := "adaptive" // the default, Concurrency 0
		if bc.conc > 0 {
			conc = fmt.Sprint(bc.conc)
		}
		name := "backlog/concurrency=" + conc
		if bc.paced > 0 {
			name = fmt.Sprintf("paced=%v/concurrency=%s", bc.paced, conc)
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, testworld.Single, simulator.Config{
				QueueDelay: -1, ProcessDelay: -1, Log: zerolog.Nop(),
				Faults: map[string]simulator.Fault{simulator.EndpointJob: {Latency: 50 * time.Millisecond}},
			})
			e.Log = zerolog.Nop()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()

			ids := make([]string, b.N)
			var wg sync.WaitGroup
			next := make(chan int)
			for range 32 {
				wg.Go(func() {
					for i := range next {
						sub, err := e.API.Submit(ctx, "prompt", map[string]string{"prompt": "bench"}, "")
						if err != nil {
							b.Errorf("submit: %v", err)
							continue
						}
						ids[i] = sub.JobID
						// As the submit service does: the bridge knows the job, so its webhook is verified
						// at the full budget (not through the unknown-job lane and the account's job list).
						now := time.Now().UTC()
						if _, err := e.Store.Create(ctx, jobs.Record{JobID: sub.JobID, Modality: "prompt", State: jobs.StatePending,
							Origin: jobs.OriginSubmit, SubmittedAt: now, Deadline: now.Add(5 * time.Minute)}); err != nil {
							b.Errorf("record: %v", err)
						}
					}
				})
			}
			for i := range b.N {
				next <- i
			}
			close(next)
			wg.Wait()
			if b.Failed() {
				return
			}
			for _, id := range ids {
				e.WaitSimStatus(id, "completed")
			}
			publish := func(id string) {
				if _, err := e.JS.PublishMsgAsync(testworld.WebhookMsg("prompt", id, testworld.WebhookBody(id, false), "127.0.0.1:1")); err != nil {
					b.Fatal(err)
				}
			}
			st, err := e.JS.Stream(ctx, contract.Default.StreamResults)
			if err != nil {
				b.Fatal(err)
			}
			if bc.paced == 0 {
				for _, id := range ids {
					publish(id)
				}
				select {
				case <-e.JS.PublishAsyncComplete():
				case <-ctx.Done():
					b.Fatal("webhooks not stored")
				}
			}

			b.ResetTimer()
			start := time.Now()
			e.startVerifier(func(c *Config) { c.Concurrency = bc.conc; c.Log = zerolog.Nop(); c.Metrics = nil })
			if bc.paced > 0 {
				t := time.NewTicker(bc.paced)
				for _, id := range ids {
					<-t.C
					publish(id)
				}
				t.Stop()
			}
			for {
				info, err := st.Info(ctx)
				if err != nil {
					b.Fatal(err)
				}
				// Each result is stored with its fence (bridge.result.<job_id>: a claim before it, a done
				// message after it): three messages per job.
				if info.State.Msgs >= 3*uint64(b.N) {
					break
				}
				if ctx.Err() != nil {
					b.Fatalf("%d of %d results", info.State.Msgs, b.N)
				}
				time.Sleep(5 * time.Millisecond) // polling the stream; a benchmark measures, it does not sync on it
			}
			elapsed := time.Since(start)
			b.StopTimer()

			lat := make([]time.Duration, 0, b.N)
			for seq := uint64(1); seq <= 3*uint64(b.N); seq++ {
				m, err := st.GetMsg(ctx, seq)
				if err != nil {
					b.Fatal(err)
				}
				if strings.HasPrefix(m.Subject, contract.Default.SubjectResultFence) {
					continue
				}
				var body struct {
					Bridge struct {
						ReceivedAt time.Time `json:"received_at"`
					} `json:"bridge"`
				}
				if err := json.Unmarshal(m.Data, &body); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, m.Time.Sub(body.Bridge.ReceivedAt))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "results/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
