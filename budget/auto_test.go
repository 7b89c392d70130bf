package budget_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/internal/clock"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// speedup runs the auto tests' minutes 20 times faster: the simulator's one-minute window and the
// budget's clock share one scaled clock, so a minute of the upstream passes in 3 s.
const speedup = 20

// TestAutoRPMLearnsTheLimitAndNeverExceedsIt is BRIDGE_API_RPM=auto against v2 simulators whose
// accounts allow 20 and 60 requests a minute (fixed windows that start at the first request, as v2
// counts them). Two processes share the budget, each with more callers than the limit allows. The
// budget starts at budget.AutoStartRPM, takes the limit from the first answer's x-ratelimit-limit
// (every process runs at it, and the shared bucket records it for bridge status), and paces by
// x-ratelimit-remaining and -reset: over three upstream minutes no window of the upstream counts more
// calls than the limit (so no 429), and from the first minute on each full window uses most of it.
func TestAutoRPMLearnsTheLimitAndNeverExceedsIt(t *testing.T) {
	for _, limit := range []int{20, 60} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			t.Parallel()
			clk := clock.NewScaled(speedup)
			sim := simtest.Run(t, simulator.Config{RPM: limit, Now: clk.Now, Log: zerolog.Nop()},
				simtest.WithContract(simulator.ContractV2))
			bs := autoProcesses(t, 2, clk)
			if got := bs[0].Params().RPM; got != budget.AutoStartRPM {
				t.Fatalf("RPM before any answer %d, want %d", got, budget.AutoStartRPM)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			for _, b := range bs {
				c := simtest.Client(t, sim, func(c *upstream.Config) {
					c.Contract, c.Limiter, c.Log = upstream.ContractV2, b, zerolog.Nop()
				})
				for range 8 {
					wg.Go(func() {
						for ctx.Err() == nil {
							// A job nobody has: a 404, counted against the account like any call.
							_, err := c.GetJob(ctx, uuid.NewString(), upstream.ClassPoll)
							if errors.Is(err, upstream.ErrRateLimited) {
								t.Errorf("429 from the upstream: %v", err)
							}
						}
					})
				}
			}
			// Settled within the first upstream minute: every process runs at the account's limit.
			natstest.WaitFor(t, time.Minute/speedup+2*time.Second, func() error {
				for i, b := range bs {
					if p := b.Params(); p.RPM != limit {
						return fmt.Errorf("process %d runs at %d/min, want %d", i, p.RPM, limit)
					}
				}
				if st := bs[0].Snapshot(); st.RPM != limit || !st.Learned {
					return fmt.Errorf("shared bucket says %d/min (learned %v), want %d learned", st.RPM, st.Learned, limit)
				}
				return nil
			})
			// Three upstream minutes of load.
			end := clk.Now().Add(3 * time.Minute)
			natstest.WaitFor(t, 3*time.Minute/speedup+5*time.Second, func() error {
				if clk.Now().Before(end) {
					return errors.New("load still running")
				}
				return nil
			})
			cancel()
			wg.Wait()

			windows := upstreamWindows(sim.Calls(simulator.EndpointJob))
			t.Logf("calls per upstream window (limit %d): %v", limit, windows)
			if len(windows) < 3 {
				t.Fatalf("%d upstream windows, want at least 3", len(windows))
			}
			for i, n := range windows {
				if n > limit {
					t.Fatalf("window %d counted %d calls, over the limit %d", i, n, limit)
				}
				if i < len(windows)-1 && n < limit*3/4 {
					t.Fatalf("window %d used %d of %d: the budget did not settle on the limit", i, n, limit)
				}
			}
			for _, c := range sim.Calls(simulator.EndpointJob) {
				if c.Status == 429 {
					t.Fatalf("a call was answered 429 at %v", c.At)
				}
			}
		})
	}
}

// TestAutoRPMLearnsFromV1Headers: a v1 upstream that sends the rate-limit headers (its token bucket's
// limit, whole tokens left, and the time until it is full) teaches an auto budget its limit too, and the
// budget keeps to it: no 429 over two upstream minutes, and most of the limit used.
func TestAutoRPMLearnsFromV1Headers(t *testing.T) {
	t.Parallel()
	const limit = 30
	clk := clock.NewScaled(speedup)
	sim := simtest.Run(t, simulator.Config{RPM: limit, RateLimitHeaders: true, Now: clk.Now, Log: zerolog.Nop()})
	bs := autoProcesses(t, 1, clk)
	c := simtest.Client(t, sim, func(c *upstream.Config) { c.Limiter, c.Log = bs[0], zerolog.Nop() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, _ = c.GetJob(ctx, uuid.NewString(), upstream.ClassPoll)
			}
		})
	}
	end := clk.Now().Add(2 * time.Minute)
	natstest.WaitFor(t, 2*time.Minute/speedup+5*time.Second, func() error {
		if clk.Now().Before(end) {
			return errors.New("load still running")
		}
		return nil
	})
	cancel()
	wg.Wait()
	if p := bs[0].Params(); p.RPM != limit {
		t.Fatalf("runs at %d/min, want the learned %d", p.RPM, limit)
	}
	calls := sim.Calls(simulator.EndpointJob)
	for _, c := range calls {
		if c.Status == 429 {
			t.Fatalf("a call was answered 429 at %v", c.At)
		}
	}
	t.Logf("%d calls in two upstream minutes at a limit of %d/min", len(calls), limit)
	if len(calls) < 2*limit*3/4 {
		t.Fatalf("%d calls in two minutes, want at least %d: the budget did not settle on the limit", len(calls), 2*limit*3/4)
	}
}

// upstreamWindows counts calls per window the way the v2 simulator does: a window is one minute from
// the first call after the previous window ended.
func upstreamWindows(calls []simulator.Call) []int {
	var out []int
	var start time.Time
	for _, c := range calls {
		if start.IsZero() || !c.At.Before(start.Add(time.Minute)) {
			start = c.At
			out = append(out, 0)
		}
		out[len(out)-1]++
	}
	return out
}

// autoProcesses starts n auto budgets on one NATS server, on clock clk.
func autoProcesses(t *testing.T, n int, clk clock.Clock) []*budget.Shared {
	t.Helper()
	return startProcesses(t, n, func(int) budget.Config {
		return budget.Config{Auto: true, Clock: clk, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
	})
}

// TestAutoPlansAtTheDocumentedLimitUntilLearned: under BRIDGE_API_RPM=auto, before any answer has told the
// account's limit, admission plans with the documented 60 a minute, not the cautious AutoStartRPM the calls
// go at meanwhile, so that an idle bridge accepts its first submission; once learned, the learned limit.
func TestAutoPlansAtTheDocumentedLimitUntilLearned(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	b := startProcesses(t, 1, func(int) budget.Config {
		return budget.Config{Auto: true, Clock: clk, Log: zerolog.Nop()}
	})[0]
	// Five minutes at 60 a minute: about 300 calls (AutoStartRPM would plan about 50).
	if got := b.Capacity(5 * time.Minute); got < 295 || got > 310 {
		t.Fatalf("capacity over 5 min before the limit is learned = %.1f, want about 300 (60/min)", got)
	}
	b.ObserveLimit(upstream.RateLimit{Limit: 20, Remaining: -1})
	natstest.WaitFor(t, 10*time.Second, func() error {
		if got := b.Capacity(5 * time.Minute); got > 110 {
			return fmt.Errorf("capacity over 5 min after learning 20/min = %.1f, want about 100", got)
		}
		return nil
	})
}
