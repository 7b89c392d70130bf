package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestPollOnlyLearnsFromTheExport is poll-only end to end, on both contracts: no BRIDGE_PUBLIC_URL, so no
// webhook, and 30 jobs in flight at once. The reconciler learns their results from export polls, each
// one call for every job of its window, so the account spends at most 1.3 calls a result, submissions
// included. Scaled down: the account allows 600 calls a minute (the poll interval scales with it); with
// BRIDGE_BUDGET_FIGURES set, the real 60, for the figures (about a minute a contract).
func TestPollOnlyLearnsFromTheExport(t *testing.T) {
	rpm, process := 600, 2*time.Second
	if os.Getenv("BRIDGE_BUDGET_FIGURES") != "" {
		rpm, process = 60, 20*time.Second
	}
	for _, c := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(c, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{Seed: 21, RPM: rpm, QueueDelay: 200 * time.Millisecond,
				ProcessDelay: process}, simtest.WithContract(c))
			cfg := testConfig(t)
			cfg.APIURL, cfg.APIRPM, cfg.PublicURL = sim.URL(), RPM(rpm), ""
			if c == simulator.ContractV2 {
				cfg.APIContract = contract.ContractV2
			}
			a := startApp(t, cfg, zerolog.Nop())
			waitReady(t, "http://"+a.Addr().String())
			nc, _ := natstest.Connect(t, cfg.NATSURL)
			const n = 30
			ids := make([]string, 0, n)
			for i := range n {
				ids = append(ids, submitPatiently(t, nc, "poll only "+strconv.Itoa(i)))
			}
			var lat []time.Duration
			natstest.WaitFor(t, 3*time.Minute, func() error {
				lat = lat[:0]
				for _, id := range ids {
					raw, err := ops.JobStatus(natstest.CtxWithin(t, 5*time.Second), nc, contract.Default, id)
					if err != nil {
						return err
					}
					d, src, ok := resultOf(raw)
					if !ok {
						return fmt.Errorf("no result yet for job %s", id)
					}
					if src != contract.SourceExport {
						t.Fatalf("job %s: source %q, want export", id, src)
					}
					lat = append(lat, d)
				}
				return nil
			})
			calls := len(simtest.Calls(sim))
			slices.Sort(lat)
			t.Logf("%d results, %d upstream calls (%.2f a result; %d exports, %d GET /job, %d list pages); completion to result p50 %v",
				n, calls, float64(calls)/n, sim.CallCount(simulator.EndpointExport), sim.CallCount(simulator.EndpointJob),
				sim.CallCount(simulator.EndpointJobs), lat[len(lat)/2])
			if float64(calls) > 1.3*n {
				t.Errorf("%d upstream calls for %d results: more than 1.3 a result", calls, n)
			}
		})
	}
}

// submitPatiently submits a prompt job, as a client that honours BUSY's Retry-After (waiting on a timer, not
// to synchronise with the bridge), and returns its id.
func submitPatiently(t *testing.T, nc *nats.Conn, prompt string) string {
	t.Helper()
	for range 60 {
		rep, _, err := ops.Submit(natstest.CtxWithin(t, 10*time.Second), nc,
			ops.SubmitRequest{Modality: "prompt", Fields: map[string]string{"prompt": prompt}})
		if se, ok := errors.AsType[*ops.ServiceError](err); ok && se.Busy() {
			<-time.After(time.Duration(max(1, se.RetryAfter)) * time.Second)
			continue
		}
		if err != nil {
			t.Fatalf("submission: %v", err)
		}
		return rep.JobID
	}
	t.Fatal("submission BUSY for a minute")
	return ""
}

// resultOf reads, from a jobs.status reply, the time from the upstream's completion to the bridge's
// learning of it, and the result's source.
func resultOf(raw json.RawMessage) (time.Duration, string, bool) {
	var st struct {
		Result *struct {
			CompletedAt *time.Time `json:"completed_at"`
			Bridge      struct {
				Source     string    `json:"source"`
				ReceivedAt time.Time `json:"received_at"`
			} `json:"bridge"`
		} `json:"result"`
	}
	if json.Unmarshal(raw, &st) != nil || st.Result == nil {
		return 0, "", false
	}
	var d time.Duration
	if st.Result.CompletedAt != nil {
		d = st.Result.Bridge.ReceivedAt.Sub(*st.Result.CompletedAt)
	}
	return d, st.Result.Bridge.Source, true
}
