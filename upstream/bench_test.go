package upstream_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// BenchmarkClientGetJob measures GET /job/{id} through the client (no budget) against the simulator on
// loopback, in parallel: client overhead plus the simulator's.
func BenchmarkClientGetJob(b *testing.B) {
	sim := simtest.Run(b, simulator.Config{ProcessDelay: -1, QueueDelay: -1, Log: zerolog.Nop()})
	c := simtest.Client(b, sim, func(cfg *upstream.Config) { cfg.Log = zerolog.Nop() })
	ctx := context.Background()
	s, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.GetJob(ctx, s.JobID, upstream.ClassVerify); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}

// BenchmarkSimulatorSubmit measures the simulator's submission ceiling with a bare HTTP client: each
// job runs its whole life (timers, completion); no webhook.
func BenchmarkSimulatorSubmit(b *testing.B) {
	sim := simtest.Run(b, simulator.Config{QueueDelay: time.Millisecond, ProcessDelay: 5 * time.Millisecond, Log: zerolog.Nop()})
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256
	hc := &http.Client{Transport: t}
	body := url.Values{"prompt": {"benchmark prompt"}}.Encode()
	target := sim.URL() + "/moderate/prompt"
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+simulator.DefaultKey)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}
