package crash_test

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream/simulator"
)

// The budget scenarios run the one-minute tests ten times faster: an account of 600 requests a
// minute instead of 60, prompt deadlines of 6 s instead of 60 s, a poll interval of 500 ms instead of 5 s.
const (
	budgetRPM   = 600
	budgetBurst = budgetRPM / 12 // the default, five seconds' worth
)

func budgetRig(t *testing.T, api string) *rig {
	sim := simulator.Config{Seed: 11, RPM: budgetRPM, Burst: budgetBurst, QueueDelay: 20 * time.Millisecond,
		ProcessDelay: 300 * time.Millisecond, Log: zerolog.Nop()}
	return newRig(t, rigConfig{api: api, sim: &sim, env: map[string]string{
		"BRIDGE_API_RPM": fmt.Sprint(budgetRPM), "BRIDGE_TIMEOUT_PROMPT": "6s",
		"BRIDGE_POLL_INTERVAL": "500ms", "BRIDGE_WEBHOOK_GRACE": "200ms",
		// 600/min leaves 60/min for unknown jobs: the default backlog of 10,000 needs more than 1h.
		"BRIDGE_RETENTION": "24h",
	}})
}

// submissions is what a burst of submit requests got.
type submissions struct {
	mu                             sync.Mutex
	accepted, busy, noReply, other int
	slowest                        time.Duration
	otherErr                       string
}

// offer sends n submit requests over moderate.prompt, one every period, each caller waiting at most 5 s
// (as the clients do), and records the answers; accepted jobs are owed a result.
func (r *rig) offer(n int, period time.Duration) *submissions {
	s := &submissions{}
	var wg sync.WaitGroup
	tick := time.NewTicker(period)
	defer tick.Stop()
	for i := range n {
		if i > 0 {
			<-tick.C
		}
		wg.Go(func() {
			start := time.Now()
			msg, err := r.nc.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"budget scenario"}`), 5*time.Second)
			took := time.Since(start)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.slowest = max(s.slowest, took)
			switch {
			case err != nil:
				s.noReply++
			case msg.Header.Get(micro.ErrorCodeHeader) == "429" &&
				strings.HasPrefix(msg.Header.Get(micro.ErrorHeader), "BUSY") && msg.Header.Get("Retry-After") != "":
				s.busy++
			case msg.Header.Get(micro.ErrorCodeHeader) != "":
				s.other++
				s.otherErr = msg.Header.Get(micro.ErrorCodeHeader) + " " + msg.Header.Get(micro.ErrorHeader)
			default:
				var rep struct {
					JobID string `json:"job_id"`
				}
				if json.Unmarshal(msg.Data, &rep) != nil || rep.JobID == "" {
					s.other++
					s.otherErr = string(msg.Data)
					return
				}
				s.accepted++
				r.led.addReal(rep.JobID)
				r.led.mustHave(rep.JobID, "accepted over moderate.prompt")
			}
		})
	}
	wg.Wait()
	return s
}

func rateLimited(calls []simulator.Call) int {
	n := 0
	for _, c := range calls {
		if c.Status == 429 {
			n++
		}
	}
	return n
}

// TestOverloadAnswersFastAndFinishesWhatItAccepts is the overload on one process, ten times
// faster: 20 submissions a second for 6 s against a 600/min account, each caller waiting at most 5 s.
// Every request is answered within 2 s (accepted or BUSY), at least 20 are accepted, every accepted job
// ends with exactly one verified result (none a timeout), and the upstream answers at most three 429s.
func TestOverloadAnswersFastAndFinishesWhatItAccepts(t *testing.T) {
	eachContract(t, false, func(t *testing.T, api string) {
		r := budgetRig(t, api)
		r.startBridge()
		start := time.Now()
		s := r.offer(120, 50*time.Millisecond)
		t.Logf("120 requests: %d accepted, %d BUSY, %d no reply, %d other (%s); slowest answer %v",
			s.accepted, s.busy, s.noReply, s.other, s.otherErr, s.slowest)
		if s.noReply > 0 || s.other > 0 {
			t.Errorf("%d requests got no reply within 5s and %d another answer (%s); want accepted or BUSY", s.noReply, s.other, s.otherErr)
		}
		if s.slowest > 2*time.Second {
			t.Errorf("slowest answer %v; every request must be answered within 2s", s.slowest)
		}
		if s.accepted < 20 {
			t.Errorf("%d accepted; want at least 20", s.accepted)
		}
		r.waitSettled(60 * time.Second)
		v := r.checkExactlyOnce()
		if n := v.bySource[contract.SourceTimeout]; n > 0 {
			t.Errorf("%d accepted jobs ended as timeouts; the budget must carry every accepted job's verification", n)
		}
		calls := simtest.Calls(r.sim)
		if n := rateLimited(calls); n > 3 {
			t.Errorf("%d upstream 429s; want at most 3 with the bridge the account's only caller", n)
		}
		elapsed := time.Since(start)
		t.Logf("figures: %d upstream calls for %d results (%.2f per result); goodput %.0f results/min against an ideal of %d; %d 429s; in %v",
			len(calls), v.results, float64(len(calls))/float64(max(1, v.results)),
			float64(v.results)/elapsed.Minutes(), budgetRPM/2, rateLimited(calls), elapsed.Round(time.Millisecond))
	})
}

// TestAccountBudgetSharedByProcesses is the several processes on one NATS, ten times faster:
// demand far above a 600/min account for 10 s, from two processes, and from three with one killed with
// SIGKILL half-way. Counted at the upstream, no window W holds more than RPM×W + burst calls (a second,
// ten, a minute); every accepted job ends with exactly one verified result, none a timeout; and after a
// kill the survivors take over the dead process's share.
func TestAccountBudgetSharedByProcesses(t *testing.T) {
	eachContract(t, false, func(t *testing.T, api string) {
		for _, tc := range []struct {
			name      string
			processes int
			kill      bool
		}{
			{name: "two", processes: 2},
			{name: "three, one killed", processes: 3, kill: true},
		} {
			t.Run(tc.name, func(t *testing.T) { sharedBudgetScenario(t, api, tc.processes, tc.kill) })
		}
	})
}

func sharedBudgetScenario(t *testing.T, api string, processes int, kill bool) {
	r := budgetRig(t, api)
	r.startBridge()
	var others []*child
	for range processes - 1 {
		c := newChild(t, r.env)
		c.start(r.nc)
		others = append(others, c)
	}

	start := time.Now()
	var killedAt time.Time
	done := make(chan *submissions)
	go func() { done <- r.offer(400, 25*time.Millisecond) }()
	if kill {
		killTimer := time.NewTimer(5 * time.Second)
		select {
		case <-killTimer.C:
			others[0].kill()
			killedAt = time.Now()
		case s := <-done:
			t.Fatalf("the load ended before the kill: %+v", s)
		}
	}
	s := <-done
	killed := "none killed"
	if kill {
		killed = fmt.Sprintf("one killed at +%v", killedAt.Sub(start).Round(time.Millisecond))
	}
	t.Logf("400 requests over %d processes (%s): %d accepted, %d BUSY, %d no reply, %d other (%s); slowest %v",
		processes, killed, s.accepted, s.busy, s.noReply, s.other, s.otherErr, s.slowest)
	if s.accepted < 20 {
		t.Errorf("%d accepted; want at least 20", s.accepted)
	}
	if !kill && (s.noReply > 0 || s.slowest > 2*time.Second) {
		t.Errorf("%d requests without a reply, slowest %v; every request must be answered within 2s", s.noReply, s.slowest)
	}
	r.waitSettled(60 * time.Second)
	v := r.checkExactlyOnce()
	if n := v.bySource[contract.SourceTimeout]; n > 0 {
		t.Errorf("%d accepted jobs ended as timeouts", n)
	}
	calls := simtest.Calls(r.sim)
	tenS, oneS, minute := simtest.MostInWindow(calls, 10*time.Second), simtest.MostInWindow(calls, time.Second), simtest.MostInWindow(calls, time.Minute)
	t.Logf("figures: %d upstream calls for %d results (%.2f per result); most in 1s %d, in 10s %d, in 60s %d; %d 429s",
		len(calls), v.results, float64(len(calls))/float64(max(1, v.results)), oneS, tenS, minute, rateLimited(calls))
	if limit := budgetRPM/6 + budgetBurst; tenS > limit {
		t.Errorf("%d calls in a 10s window; limit RPM/6+burst = %d", tenS, limit)
	}
	if limit := budgetRPM/60 + budgetBurst; oneS > limit {
		t.Errorf("%d calls in a 1s window; limit RPM/60+burst = %d", oneS, limit)
	}
	if limit := budgetRPM + budgetBurst; minute > limit {
		t.Errorf("%d calls in a 60s window; limit RPM+burst = %d", minute, limit)
	}
	if n := rateLimited(calls); n > 3 {
		t.Errorf("%d upstream 429s; want at most 3", n)
	}
	if !kill {
		return
	}
	// The dead process's share returns: in the 3 s after the kill (plus a second for its lapsing lease)
	// the survivors still make calls at well over a third of the rate.
	after := 0
	for _, c := range calls {
		if c.At.After(killedAt.Add(time.Second)) && c.At.Before(killedAt.Add(4*time.Second)) {
			after++
		}
	}
	if min := budgetRPM / 60 * 3 / 2; after < min {
		t.Errorf("%d calls in the 3s after the kill; the survivors should use the whole budget (%d would be half)", after, min)
	}
}

// TestOverloadAtTheRealBudget is the overload at its real size, for the figures (set
// BRIDGE_BUDGET_FIGURES=1; about 2 minutes a contract): a 60/min account, 2 submissions a second for 60 s,
// each caller waiting at most 5 s, the bridge's defaults otherwise (30 s sweeps, 10 s grace). Every
// accepted job ends with exactly one verified result, none a timeout, and the account's calls yield at
// least 0.85 results each, submissions and verifications included.
func TestOverloadAtTheRealBudget(t *testing.T) {
	if os.Getenv("BRIDGE_BUDGET_FIGURES") == "" {
		t.Skip("BRIDGE_BUDGET_FIGURES=1 runs the one-minute overload at the real budget")
	}
	eachContract(t, false, func(t *testing.T, api string) {
		sim := simulator.Config{Seed: 11, RPM: 60, QueueDelay: 500 * time.Millisecond, ProcessDelay: 2 * time.Second,
			Log: zerolog.Nop()}
		r := newRig(t, rigConfig{api: api, sim: &sim, env: map[string]string{"BRIDGE_API_RPM": "60",
			"BRIDGE_POLL_INTERVAL": "30s", "BRIDGE_WEBHOOK_GRACE": "10s"}})
		r.startBridge()
		start := time.Now()
		s := r.offer(120, 500*time.Millisecond)
		t.Logf("120 requests: %d accepted, %d BUSY, %d no reply, %d other (%s); slowest answer %v",
			s.accepted, s.busy, s.noReply, s.other, s.otherErr, s.slowest)
		r.waitSettled(5 * time.Minute)
		v := r.checkExactlyOnce()
		if n := v.bySource[contract.SourceTimeout]; n > 0 {
			t.Errorf("%d accepted jobs ended as timeouts", n)
		}
		calls := simtest.Calls(r.sim)
		perCall := float64(v.results) / float64(max(1, len(calls)))
		p50, p90 := r.webhookToResult()
		t.Logf("figures: %d upstream calls for %d results (%.2f results a call, by source %v); %.1f results/min; "+
			"webhook to result p50 %v, p90 %v; %d 429s; in %v",
			len(calls), v.results, perCall, v.bySource, float64(v.results)/time.Since(start).Minutes(), p50, p90,
			rateLimited(calls), time.Since(start).Round(time.Second))
		if perCall < 0.85 {
			t.Errorf("%.2f results a call, want at least 0.85", perCall)
		}
	})
}

// webhookToResult is the median and 90th percentile, over RESULTS, of the time from the webhook's arrival
// (bridge.received_at) to the result's verification (bridge.verified_at).
func (r *rig) webhookToResult() (p50, p90 time.Duration) {
	var ds []time.Duration
	for _, m := range natstest.StreamMsgs(r.t, r.js, contract.Default.StreamResults) {
		var body struct {
			Bridge struct {
				ReceivedAt time.Time  `json:"received_at"`
				VerifiedAt *time.Time `json:"verified_at"`
			} `json:"bridge"`
		}
		if json.Unmarshal(m.Data, &body) == nil && body.Bridge.VerifiedAt != nil {
			ds = append(ds, body.Bridge.VerifiedAt.Sub(body.Bridge.ReceivedAt))
		}
	}
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)*9/10].Round(time.Millisecond)
}
