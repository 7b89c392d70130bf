package bridge

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream/simulator"
)

// The namespace test runs an account of 600 requests a minute (ten a second, a burst of 50: BRIDGE_API_BURST's
// default, five seconds' worth), ten times the default's, so that seconds show what a minute would.
const (
	nsRPM   = 600
	nsBurst = nsRPM / 12
)

// TestTwoNamespacesShareNATSAndTheBudget runs two bridges on one NATS server and one upstream account:
// one without a namespace, one in "staging". Each sees only its own jobs, webhooks and results, under
// its own names: neither bridge's RESULTS, WEBHOOKS or JOBS holds anything of the other's jobs. Submitting to both
// at eight times the account's rate, together they stay within the account's limit (an upstream that does
// not enforce it sees no more than it allows), because both draw on the one budget of the account.
func TestTwoNamespacesShareNATSAndTheBudget(t *testing.T) {
	srv := natstest.RunServer(t)
	// The simulator does not limit: what is measured is what the bridges hold themselves to.
	sim := simtest.Run(t, simulator.Config{Seed: 5, QueueDelay: 20 * time.Millisecond,
		ProcessDelay: 200 * time.Millisecond, Log: zerolog.Nop()})
	base := Config{
		NATSURL: srv.ClientURL(), HTTPAddr: "127.0.0.1:0", APIURL: sim.URL(), APIKey: simulator.DefaultKey,
		APIRPM: nsRPM, TimeoutPrompt: time.Minute, TimeoutImage: time.Minute, TimeoutVideo: time.Minute,
		TimeoutChat: time.Minute, PollInterval: 30 * time.Second, WebhookGrace: 10 * time.Second,
		MaxBody: 64 << 10, DuplicateWindow: 2 * time.Minute, Retention: time.Hour, Replicas: 1,
		Roles: allRoles[:], LogLevel: "warn", LogFormat: "json",
	}
	prod, staging := base, base
	staging.Namespace = "staging"
	startApp(t, prod, zerolog.Nop(), WithPublicURLFromListener())
	startApp(t, staging, zerolog.Nop(), WithPublicURLFromListener())
	nc, js := natstest.Connect(t, srv.ClientURL())

	// Eight times the account's rate for 3 s: 40 submissions a second to each bridge.
	var wg sync.WaitGroup
	var accepted [2][]string
	for i, names := range []contract.Names{prod.Names(), staging.Names()} {
		wg.Go(func() { accepted[i] = offerEvery(t, nc, names.SubjectSubmit+"prompt", 120, 25*time.Millisecond) })
	}
	wg.Wait()
	if len(accepted[0]) == 0 || len(accepted[1]) == 0 {
		t.Fatalf("accepted %d and %d submissions: want some in each namespace", len(accepted[0]), len(accepted[1]))
	}

	// Each job ends with exactly one result, in its own namespace's RESULTS only.
	checkOwnOnly(t, js, [2]contract.Names{prod.Names(), staging.Names()}, accepted)
	if got := streamNames(t, js); !slices.Contains(got, "STAGING_WEBHOOKS") || !slices.Contains(got, "KV_STAGING_JOBS") ||
		!slices.Contains(got, "WEBHOOKS") || !slices.Contains(got, "KV_JOBS") {
		t.Errorf("streams %v: want WEBHOOKS and KV_JOBS, STAGING_WEBHOOKS and KV_STAGING_JOBS", got)
	}
	for stream, want := range map[string]string{"WEBHOOKS": "verify", "STAGING_WEBHOOKS": "STAGING_verify"} {
		if got := consumerNames(t, js, stream); !slices.Equal(got, []string{want}) {
			t.Errorf("consumers of %s: %v, want [%s]", stream, got, want)
		}
	}

	calls := simtest.Calls(sim)
	limited := 0
	for _, c := range calls {
		if c.Status == 429 {
			limited++
		}
	}
	// The account allows its burst and then ten a second: at most 70 calls in any 2 s.
	busiest := simtest.MostInWindow(calls, 2*time.Second)
	t.Logf("accepted %d + %d; %d upstream calls, at most %d in 2 s, %d answered 429", len(accepted[0]), len(accepted[1]),
		len(calls), busiest, limited)
	if busiest > nsBurst+2*nsRPM/60+5 || limited > 3 {
		t.Errorf("%d calls in 2 s (the account allows %d) and %d answered 429: the two namespaces spent more than the account's limit together",
			busiest, nsBurst+2*nsRPM/60, limited)
	}
}

// checkOwnOnly waits until each namespace's accepted jobs have a result, and fails the test unless each has
// exactly one, in its own namespace's RESULTS, and neither namespace's RESULTS, WEBHOOKS or JOBS holds
// anything of the other's jobs (while each of its own is in them).
func checkOwnOnly(t *testing.T, js jetstream.JetStream, both [2]contract.Names, accepted [2][]string) {
	t.Helper()
	for i, names := range both {
		other := both[1-i]
		natstest.WaitFor(t, 60*time.Second, func() error {
			counts := resultCounts(t, js, names)
			for _, id := range accepted[i] {
				if counts[id] == 0 {
					return fmt.Errorf("%s: no result yet for job %s", names.StreamResults, id)
				}
			}
			return nil
		})
		counts := resultCounts(t, js, names)
		for _, id := range accepted[i] {
			if counts[id] != 1 {
				t.Errorf("%s: job %s has %d results in %s, want 1", names.Namespace, id, counts[id], names.StreamResults)
			}
		}
		if stray := resultCounts(t, js, other); anyOf(stray, accepted[i]) {
			t.Errorf("%s's jobs have results in %s", names.Namespace, other.StreamResults)
		}
		for _, stream := range []string{names.StreamWebhooks, "KV_" + names.BucketJobs} {
			own, stray := natstest.Mentions(t, js, stream, accepted[i]), natstest.Mentions(t, js, stream, accepted[1-i])
			if own != len(accepted[i]) || stray != 0 {
				t.Errorf("%s mentions %d of its bridge's %d jobs (want all) and %d of the other's (want none)",
					stream, own, len(accepted[i]), stray)
			}
		}
	}
}

// offerEvery sends n submissions on subject, one every period, and returns the ids of those accepted.
func offerEvery(tb testing.TB, nc *nats.Conn, subject string, n int, period time.Duration) []string {
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	tick := time.NewTicker(period)
	defer tick.Stop()
	for i := range n {
		if i > 0 {
			<-tick.C
		}
		wg.Go(func() {
			msg, err := nc.Request(subject, []byte(`{"prompt":"namespaces"}`), 10*time.Second)
			if err != nil || msg.Header.Get(micro.ErrorCodeHeader) != "" {
				return // BUSY, mostly: the budget is the ceiling
			}
			var rep struct {
				JobID string `json:"job_id"`
			}
			if json.Unmarshal(msg.Data, &rep) == nil && rep.JobID != "" {
				mu.Lock()
				ids = append(ids, rep.JobID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ids
}

// resultCounts counts the results of each job (by Nats-Msg-Id) in the RESULTS of names.
func resultCounts(tb testing.TB, js jetstream.JetStream, names contract.Names) map[string]int {
	tb.Helper()
	ctx := natstest.Ctx(tb)
	c, err := js.OrderedConsumer(ctx, names.StreamResults, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{names.SubjectResults + ">"}})
	if err != nil {
		tb.Fatal(err)
	}
	counts := map[string]int{}
	for {
		msgs, err := c.FetchNoWait(500)
		if err != nil {
			tb.Fatal(err)
		}
		n := 0
		for m := range msgs.Messages() {
			counts[m.Headers().Get(jetstream.MsgIDHeader)]++
			n++
		}
		if n == 0 {
			return counts
		}
	}
}

func anyOf(counts map[string]int, ids []string) bool {
	for _, id := range ids {
		if counts[id] > 0 {
			return true
		}
	}
	return false
}

func streamNames(tb testing.TB, js jetstream.JetStream) []string {
	tb.Helper()
	var out []string
	l := js.StreamNames(natstest.Ctx(tb))
	for n := range l.Name() {
		out = append(out, n)
	}
	if err := l.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func consumerNames(tb testing.TB, js jetstream.JetStream, stream string) []string {
	tb.Helper()
	s, err := js.Stream(natstest.Ctx(tb), stream)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	l := s.ConsumerNames(natstest.Ctx(tb))
	for n := range l.Name() {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// TestNamespacedBridgeLeavesUnnamespacedStreamsAlone starts a bridge without a namespace, gives it a job
// and stops it; then starts one in "staging" on the same NATS server, gives it a job and stops it. Every
// stream and bucket the first created (BRIDGE_BUDGET aside: the account's budget is shared by every
// namespace by design, so only its configuration must stay), and every durable consumer on them, has the
// same configuration and state afterwards as before: the namespaced bridge touched none of them.
func TestNamespacedBridgeLeavesUnnamespacedStreamsAlone(t *testing.T) {
	prod := testConfig(t)
	prod.LogLevel = "warn"
	staging := prod
	staging.Namespace = "staging"
	for _, c := range []*Config{&prod, &staging} {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	nc, js := natstest.Connect(t, prod.NATSURL)

	a, stop := runApp(t, prod, WithPublicURLFromListener())
	waitReady(t, "http://"+a.Addr().String())
	submitAndWait(t, nc, js, prod.Names())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, js, func(stream string) bool { return !strings.Contains(stream, "STAGING_") })
	if _, ok := before["WEBHOOKS"]; !ok || len(before) < 5 {
		t.Fatalf("the unnamespaced bridge created %d streams, WEBHOOKS among them: %v", len(before), slices.Sorted(maps.Keys(before)))
	}

	a, stop = runApp(t, staging, WithPublicURLFromListener())
	waitReady(t, "http://"+a.Addr().String())
	submitAndWait(t, nc, js, staging.Names())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, js, func(stream string) bool { return before[stream] != "" })
	t.Logf("compared %v", slices.Sorted(maps.Keys(before)))
	for stream, was := range before {
		if after[stream] != was {
			t.Errorf("%s changed under the namespaced bridge:\nbefore %s\nafter  %s", stream, was, after[stream])
		}
	}
}

// submitAndWait submits one job over names' moderate.prompt and waits for its result in names' RESULTS.
func submitAndWait(tb testing.TB, nc *nats.Conn, js jetstream.JetStream, names contract.Names) {
	tb.Helper()
	ids := offerEvery(tb, nc, names.SubjectSubmit+"prompt", 1, time.Millisecond)
	if len(ids) != 1 {
		tb.Fatalf("%sprompt accepted %d of 1 submissions", names.SubjectSubmit, len(ids))
	}
	natstest.WaitFor(tb, 30*time.Second, func() error {
		if resultCounts(tb, js, names)[ids[0]] != 1 {
			return fmt.Errorf("no result yet for job %s in %s", ids[0], names.StreamResults)
		}
		return nil
	})
}

// snapshot renders, for each stream that keep selects, its configuration and state and its durable
// consumers' configuration and progress; of the shared budget bucket, its configuration only.
func snapshot(tb testing.TB, js jetstream.JetStream, keep func(stream string) bool) map[string]string {
	tb.Helper()
	ctx := natstest.Ctx(tb)
	out := map[string]string{}
	for _, name := range streamNames(tb, js) {
		if !keep(name) {
			continue
		}
		s, err := js.Stream(ctx, name)
		if err != nil {
			tb.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		if name == "KV_"+contract.BucketBudget {
			out[name] = fmt.Sprintf("%+v", info.Config)
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%+v\nstate %+v", info.Config, info.State)
		for _, c := range consumerNames(tb, js, name) {
			ci, err := js.Consumer(ctx, name, c)
			if err != nil {
				tb.Fatal(err)
			}
			cinfo := ci.CachedInfo()
			if cinfo.Config.Durable == "" {
				continue
			}
			fmt.Fprintf(&b, "\nconsumer %s %+v delivered %+v ack floor %+v pending %d", c, cinfo.Config, cinfo.Delivered,
				cinfo.AckFloor, cinfo.NumPending)
		}
		out[name] = b.String()
	}
	return out
}
