package crash_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestTwoNamespacedProcessesShareOneServer is issue 23's black-box run of namespaces: one nats-server, one
// simulator account (600 requests a minute, a burst of 50, enforced by the simulator) and two `bridge run`
// processes with the same API key, each on its own webhook address: one without a namespace, one with
// BRIDGE_NAMESPACE=staging. 20 jobs are submitted to each over its own moderate.<modality> (prompt and
// image, all at once, each retrying BUSY after its Retry-After), and the simulator sends each job's webhook to the process that submitted it. Each
// job ends with exactly one result, published on its own bridge's subjects (results.> or staging.results.>)
// and stored in its own RESULTS; neither bridge's WEBHOOKS, JOBS or RESULTS mentions a job of the other;
// and the two bridges' 80 or so upstream calls stay within the one account's limit (at most RPM/60 + burst
// in any second, no more than 3 answered 429), because both draw on the account's one budget. Both
// contracts (v2: signed webhooks that the upstream retries). Bound: 60 s for the results; the run takes a
// few seconds.
func TestTwoNamespacedProcessesShareOneServer(t *testing.T) {
	eachContract(t, true, twoNamespacesScenario)
}

func twoNamespacesScenario(t *testing.T, api string) {
	const perBridge = 20
	r := budgetRig(t, api)
	staging, err := contract.NamesFor("staging")
	if err != nil {
		t.Fatal(err)
	}
	names := [2]contract.Names{contract.Default, staging}
	published := followResults(t, r.nc, names)
	r.startBridge()
	env := maps.Clone(r.env)
	env["BRIDGE_NAMESPACE"] = staging.Namespace
	second := newChild(t, env)
	second.service = staging.ServiceName
	second.start(r.nc)

	var ids [2][]string
	var wg sync.WaitGroup
	for i := range names {
		wg.Go(func() { ids[i] = submitMany(t, r.nc, names[i], perBridge) })
	}
	wg.Wait()
	natstest.WaitFor(t, 60*time.Second, func() error {
		for i, n := range names {
			counts := primaryResults(t, r, n)
			for _, id := range ids[i] {
				if counts[id] == 0 {
					return fmt.Errorf("%s: no result yet for job %s", n.StreamResults, id)
				}
			}
		}
		return nil
	})
	for i, n := range names {
		other := names[1-i]
		counts := primaryResults(t, r, n)
		for _, id := range ids[i] {
			if counts[id] != 1 {
				t.Errorf("job %s has %d results in %s, want 1", id, counts[id], n.StreamResults)
			}
			if got := published.on(n.SubjectResults, id); got != 1 {
				t.Errorf("job %s: %d results published on %s>, want 1", id, got, n.SubjectResults)
			}
			if got := published.on(other.SubjectResults, id); got != 0 {
				t.Errorf("job %s: %d results published on %s>, want 0", id, got, other.SubjectResults)
			}
		}
		for _, stream := range []string{n.StreamWebhooks, "KV_" + n.BucketJobs, n.StreamResults} {
			own, stray := natstest.Mentions(t, r.js, stream, ids[i]), natstest.Mentions(t, r.js, stream, ids[1-i])
			if own != len(ids[i]) || stray != 0 {
				t.Errorf("%s mentions %d of its bridge's %d jobs (want all) and %d of the other's (want none)",
					stream, own, len(ids[i]), stray)
			}
		}
	}
	checkOneAccount(t, r.sim)
}

// submitMany submits n jobs at once over names' moderate.prompt and moderate.image, each caller retrying a
// BUSY answer after its Retry-After as a client would (the account's budget is the ceiling), and returns the
// ids; it fails the test for any other answer, or a job still BUSY after 20 s.
func submitMany(tb testing.TB, nc *nats.Conn, names contract.Names, n int) []string {
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for i := range n {
		m := modalities[i%len(modalities)]
		wg.Go(func() {
			if id := submitUntilAccepted(tb, nc, names.SubjectSubmit+m.name, m.field, m.value); id != "" {
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ids
}

// submitUntilAccepted submits one job on subject, retrying BUSY after its Retry-After, for up to 20 s.
func submitUntilAccepted(tb testing.TB, nc *nats.Conn, subject, field, value string) string {
	body, _ := json.Marshal(map[string]string{field: value})
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		msg, err := nc.Request(subject, body, 15*time.Second)
		if err != nil {
			tb.Errorf("%s: %v", subject, err)
			return ""
		}
		if msg.Header.Get(micro.ErrorCodeHeader) == "429" {
			after, err := strconv.Atoi(msg.Header.Get("Retry-After"))
			if err != nil {
				tb.Errorf("%s: BUSY without a Retry-After in seconds: %s", subject, msgError(msg))
				return ""
			}
			<-time.After(time.Duration(after) * time.Second) // the client's backoff, as the bridge asked
			continue
		}
		var rep struct {
			JobID string `json:"job_id"`
		}
		if msg.Header.Get(micro.ErrorCodeHeader) != "" || json.Unmarshal(msg.Data, &rep) != nil || rep.JobID == "" {
			tb.Errorf("%s: %s %s", subject, msgError(msg), msg.Data)
			return ""
		}
		return rep.JobID
	}
	tb.Errorf("%s: still BUSY after 20s", subject)
	return ""
}

func msgError(msg *nats.Msg) string {
	if msg == nil {
		return ""
	}
	return msg.Header.Get(micro.ErrorCodeHeader) + " " + msg.Header.Get(micro.ErrorHeader)
}

// resultFeed counts, by job, the results published on each namespace's results subjects, as a core NATS
// subscriber sees them.
type resultFeed struct {
	mu     sync.Mutex
	counts map[string]map[string]int // SubjectResults -> job -> results
}

// followResults subscribes to every namespace's results.> (late results aside) until the test ends.
func followResults(tb testing.TB, nc *nats.Conn, names [2]contract.Names) *resultFeed {
	tb.Helper()
	f := &resultFeed{counts: map[string]map[string]int{}}
	for _, n := range names {
		f.counts[n.SubjectResults] = map[string]int{}
		sub, err := nc.Subscribe(n.SubjectResults+">", func(m *nats.Msg) {
			if strings.HasPrefix(m.Subject, n.SubjectLateResults) {
				return
			}
			var body struct {
				JobID string `json:"job_id"`
			}
			_ = json.Unmarshal(m.Data, &body)
			f.mu.Lock()
			f.counts[n.SubjectResults][body.JobID]++
			f.mu.Unlock()
		})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return f
}

func (f *resultFeed) on(subjectResults, id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[subjectResults][id]
}

// primaryResults counts the results of each job on names' results subjects (late ones aside) in its RESULTS.
func primaryResults(tb testing.TB, r *rig, names contract.Names) map[string]int {
	counts := map[string]int{}
	for _, m := range natstest.StreamMsgs(tb, r.js, names.StreamResults) {
		if !strings.HasPrefix(m.Subject, names.SubjectResults) || strings.HasPrefix(m.Subject, names.SubjectLateResults) {
			continue
		}
		var body struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal(m.Data, &body); err != nil {
			tb.Errorf("%s: result on %s: %v", names.StreamResults, m.Subject, err)
		}
		counts[body.JobID]++
	}
	return counts
}

// checkOneAccount fails the test when the upstream saw more than the budget scenarios' account allows.
func checkOneAccount(tb testing.TB, sim *simulator.Simulator) {
	calls := simtest.Calls(sim)
	oneS, tenS := simtest.MostInWindow(calls, time.Second), simtest.MostInWindow(calls, 10*time.Second)
	tb.Logf("%d upstream calls; most in 1s %d, in 10s %d; %d answered 429", len(calls), oneS, tenS, rateLimited(calls))
	if limit := budgetRPM/60 + budgetBurst; oneS > limit {
		tb.Errorf("%d calls in a 1s window; the account allows RPM/60+burst = %d", oneS, limit)
	}
	if limit := budgetRPM/6 + budgetBurst; tenS > limit {
		tb.Errorf("%d calls in a 10s window; the account allows RPM/6+burst = %d", tenS, limit)
	}
	if n := rateLimited(calls); n > 3 {
		tb.Errorf("%d upstream 429s; want at most 3", n)
	}
}
