package bridge

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

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
// included. Scaled down: the account allows 600 calls a minute (the poll interval scales with it).
func TestPollOnlyLearnsFromTheExport(t *testing.T) {
	for _, c := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(c, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{Seed: 21, RPM: 600, QueueDelay: 200 * time.Millisecond,
				ProcessDelay: 2 * time.Second}, simtest.WithContract(c))
			cfg := testConfig(t)
			cfg.APIURL, cfg.APIRPM, cfg.PublicURL = sim.URL(), 600, ""
			if c == simulator.ContractV2 {
				cfg.APIContract = contract.ContractV2
			}
			a := startApp(t, cfg, zerolog.Nop())
			waitReady(t, "http://"+a.Addr().String())
			nc, _ := natstest.Connect(t, cfg.NATSURL)
			const n = 30
			ids := make([]string, 0, n)
			for i := range n {
				rep, _, err := ops.Submit(natstest.CtxWithin(t, 10*time.Second), nc,
					ops.SubmitRequest{Modality: "prompt", Fields: map[string]string{"prompt": "poll only " + strconv.Itoa(i)}})
				if err != nil {
					t.Fatalf("submission %d: %v", i, err)
				}
				ids = append(ids, rep.JobID)
			}
			var lat []time.Duration
			natstest.WaitFor(t, 60*time.Second, func() error {
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
