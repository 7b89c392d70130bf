package bridge

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream/simulator"
)

// elsewhereSize is how many webhooks of jobs submitted elsewhere, and of forged ids, the test sends: the
// issue's 600 and 400 with BRIDGE_BUDGET_FIGURES set, a sixth of them in CI.
func elsewhereSize() (foreign, forged int) {
	if os.Getenv("BRIDGE_BUDGET_FIGURES") != "" {
		return 600, 400
	}
	return 100, 66
}

// TestWebhooksFromElsewhereAtTheRealBudget is the account at its real budget, 60 calls a minute,
// the simulator enforcing it, and the older contract's webhooks: unsigned, no token, for jobs the bridge
// has no record of. Forged ids cost at most 8 calls however many come (each round of the slow lane's
// export settles all that wait), and every webhook of a real job submitted elsewhere is verified, once,
// within 120 s.
func TestWebhooksFromElsewhereAtTheRealBudget(t *testing.T) {
	t.Parallel() // it mostly waits for the unknown-job budget's rounds
	nForeign, nForged := elsewhereSize()
	sim := simtest.Run(t, simulator.Config{Seed: 31, RPM: 60, QueueDelay: 50 * time.Millisecond,
		ProcessDelay: 200 * time.Millisecond, Log: zerolog.Nop()})
	cfg := testConfig(t)
	cfg.APIURL, cfg.APIRPM = sim.URL(), 60
	a := startApp(t, cfg, zerolog.Nop(), WithPublicURLFromListener())
	waitReady(t, "http://"+a.Addr().String())
	_, js := natstest.Connect(t, cfg.NATSURL)
	ctx := natstest.CtxWithin(t, 10*time.Minute)

	// Forged ids first, alone, so their calls are theirs.
	before := len(simtest.Calls(sim))
	for range nForged {
		postForeignWebhook(t, a.PublicURL(), uuid.NewString())
	}
	waitStreamCount(t, js, contract.Default.StreamDeadLetter, contract.Default.DeadLetterSubject("not_found"), nForged, 3*time.Minute)
	forgedCalls := len(simtest.Calls(sim)) - before
	t.Logf("%d forged ids: %d upstream calls", nForged, forgedCalls)
	if forgedCalls > 8 {
		t.Errorf("%d forged ids cost %d calls, want at most 8", nForged, forgedCalls)
	}

	// Jobs submitted elsewhere (seeded outside the measured window: the simulator's limit is lifted while
	// they are made and held), then released at once: their webhooks come together.
	client := simtest.Client(t, sim)
	sim.SetMetered(false)
	sim.SetHoldNew(true)
	ids := make([]string, 0, nForeign)
	for i := range nForeign {
		sub, err := client.Submit(ctx, "prompt", map[string]string{"prompt": "elsewhere " + strconv.Itoa(i)},
			a.PublicURL()+"/webhook/prompt")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sub.JobID)
	}
	sim.SetHoldNew(false)
	sim.SetMetered(true)
	before = len(simtest.Calls(sim))
	start := time.Now()
	for _, id := range ids {
		if err := sim.ReleaseJob(id); err != nil {
			t.Fatal(err)
		}
	}
	waitStreamCount(t, js, contract.Default.StreamResults, contract.Default.SubjectResults+">", nForeign, 120*time.Second)
	took := time.Since(start)
	calls := len(simtest.Calls(sim)) - before
	t.Logf("%d webhooks of jobs submitted elsewhere: all verified in %v, %d upstream calls", nForeign, took.Round(time.Second), calls)
	if got := streamCount(t, js, contract.Default.StreamResults, contract.Default.SubjectResults+">"); got != nForeign {
		t.Errorf("%d results, want %d: one each", got, nForeign)
	}
}

// postForeignWebhook posts an unsigned, tokenless webhook for id to the bridge, as the older contract sends it.
func postForeignWebhook(t *testing.T, base, id string) {
	t.Helper()
	body := fmt.Sprintf(`{"job_id":%q,"status":"completed","is_prohibited":false,"categories":{"custom":{}},"completed_at":%q}`,
		id, time.Now().UTC().Format(time.RFC3339))
	resp, err := http.Post(base+"/webhook/prompt", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("webhook: %d", resp.StatusCode)
	}
}

// waitStreamCount waits until stream holds n messages on filter.
func waitStreamCount(t *testing.T, js jetstream.JetStream, stream, filter string, n int, d time.Duration) {
	t.Helper()
	natstest.WaitFor(t, d, func() error {
		if got := streamCount(t, js, stream, filter); got < n {
			return fmt.Errorf("%d messages on %s in %s, want %d", got, filter, stream, n)
		}
		return nil
	})
}

// streamCount is how many messages stream holds on filter.
func streamCount(t *testing.T, js jetstream.JetStream, stream, filter string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}
