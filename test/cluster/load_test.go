package cluster_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/contract"
)

// connect signs in as the downstream user at all three nodes, each dialled through its published port.
func connect(t *testing.T, p *project, password string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	var urls []string
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		urls = append(urls, fmt.Sprintf("nats://downstream:%s@%s:4222", password, n))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Name("cluster-suite"), nats.SetCustomDialer(p),
		nats.IgnoreDiscoveredServers(), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.Timeout(5*time.Second), nats.RetryOnFailedConnect(false))
	if err != nil {
		t.Fatalf("connect as downstream: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// services reports why fewer than n instances of the submit service answer a ping.
func services(nc *nats.Conn, n int) error {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING."+contract.Default.ServiceName, inbox, nil); err != nil {
		return err
	}
	ids := map[string]bool{}
	deadline := time.Now().Add(time.Second)
	for len(ids) < n {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return fmt.Errorf("%d of %d submit services answer a ping: %w", len(ids), n, err)
		}
		var pong struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(m.Data, &pong)
		ids[pong.ID] = true
	}
	return nil
}

// ledger is what the load did: every job the bridge accepted, by scenario, and every answer.
type ledger struct {
	// mu guards the fields below.
	mu       sync.Mutex
	accepted map[string]string // job_id → scenario
	answers  map[string]map[string]int
	ops      atomic.Int64
}

func newLedger() *ledger {
	return &ledger{accepted: map[string]string{}, answers: map[string]map[string]int{}}
}

func (l *ledger) answer(scenario, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.answers[scenario] == nil {
		l.answers[scenario] = map[string]int{}
	}
	l.answers[scenario][what]++
}

func (l *ledger) accept(scenario, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accepted[id] = scenario
}

// jobs are the jobs accepted in scenario ("" for every scenario).
func (l *ledger) jobs(scenario string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id, s := range l.accepted {
		if scenario == "" || s == scenario {
			out = append(out, id)
		}
	}
	return out
}

// answersOf is how scenario's submissions were answered: accepted, or why not.
func (l *ledger) answersOf(scenario string) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.answers[scenario])
}

// tally counts the results on RESULTS by Nats-Msg-Id, from an ordered consumer the downstream user may
// create.
type tally struct {
	// mu guards byID and sources.
	mu      sync.Mutex
	byID    map[string]int
	sources map[string][]string
	late    atomic.Int64
}

func follow(t *testing.T, js jetstream.JetStream) *tally {
	t.Helper()
	tl := &tally{byID: map[string]int{}, sources: map[string][]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, contract.Default.StreamResults,
		jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.Default.SubjectResults + ">"}})
	if err != nil {
		t.Fatalf("ordered consumer on %s as downstream: %v", contract.Default.StreamResults, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if strings.HasPrefix(m.Subject(), contract.Default.SubjectLateResults) {
			tl.late.Add(1)
			return
		}
		id := m.Headers().Get(jetstream.MsgIDHeader)
		tl.mu.Lock()
		tl.byID[id]++
		tl.sources[id] = append(tl.sources[id], m.Headers().Get(contract.HeaderBridgeSource))
		tl.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("consume %s: %v", contract.Default.StreamResults, err)
	}
	t.Cleanup(cc.Stop)
	return tl
}

// count is how many results job id has, and their sources.
func (tl *tally) count(id string) (int, []string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.byID[id], slices.Clone(tl.sources[id])
}

// load submits one job every period over moderate.*, each in its own goroutine (at most 8 at once), until
// halted.
type load struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func (w *world) startLoad(scenario string, period time.Duration) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	go func() {
		defer close(l.done)
		defer wg.Wait()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				w.led.answer(scenario, "skipped: 8 in flight")
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				w.submit(scenario, i)
			})
		}
	}()
	return l
}

// halt stops the load and waits for the submissions in flight; it may be called again.
func (l *load) halt() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

var modalities = []struct{ name, field, value string }{
	{"prompt", "prompt", "cluster suite prompt"},
	{"image", "image_url", "https://example.com/cluster.png"},
}

// submit submits one job, retrying with the same Idempotency-Key (so a retry never makes a second job)
// while the cluster does not answer or the bridge says BUSY, for at most 40 s. A job_id in the reply
// means the bridge owes its result.
func (w *world) submit(scenario string, i int) {
	w.led.ops.Add(1)
	m := modalities[i%len(modalities)]
	body, _ := json.Marshal(map[string]string{m.field: m.value})
	key := uuid.NewString()
	deadline := time.Now().Add(40 * time.Second)
	for attempt := 1; ; attempt++ {
		msg := nats.NewMsg(contract.Default.SubjectSubmit + m.name)
		msg.Data = body
		msg.Header.Set(contract.HeaderIdempotencyKey, key)
		reply, err := w.nc.RequestMsg(msg, 10*time.Second)
		wait, why := time.Second, ""
		switch {
		case err != nil:
			if !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, nats.ErrConnectionClosed) {
				w.led.answer(scenario, "error: "+err.Error())
				return
			}
			why = err.Error()
		case reply.Header.Get(micro.ErrorCodeHeader) == "429":
			if s, err := strconv.Atoi(reply.Header.Get("Retry-After")); err == nil {
				wait = min(time.Duration(s)*time.Second, 5*time.Second)
			}
			why = "429 " + reply.Header.Get(micro.ErrorHeader)
		case reply.Header.Get(micro.ErrorCodeHeader) == "503":
			// SHUTTING_DOWN, UNAVAILABLE, IDEMPOTENCY_UNAVAILABLE: nothing was submitted; the same key
			// is safe to retry, as a downstream service would.
			why = "503 " + reply.Header.Get(micro.ErrorHeader)
		case reply.Header.Get(micro.ErrorCodeHeader) != "":
			w.led.answer(scenario, fmt.Sprintf("refused %s: %s", reply.Header.Get(micro.ErrorCodeHeader), reply.Header.Get(micro.ErrorHeader)))
			return
		default:
			var rep struct {
				JobID string `json:"job_id"`
			}
			if json.Unmarshal(reply.Data, &rep) != nil || rep.JobID == "" {
				w.led.answer(scenario, "reply without job_id: "+string(reply.Data))
				return
			}
			w.led.accept(scenario, rep.JobID)
			w.led.answer(scenario, "accepted")
			if attempt > 1 {
				w.led.answer(scenario, "accepted on a retry")
			}
			return
		}
		if time.Now().Add(wait).After(deadline) {
			w.led.answer(scenario, fmt.Sprintf("given up after %d attempts (last: %s)", attempt, why))
			return
		}
		w.led.answer(scenario, "retried after: "+trim(why))
		time.Sleep(wait) // backoff between attempts of one submission, not a wait for a condition
	}
}

// waitAccepted waits until n more jobs of scenario than when called have been accepted.
func (w *world) waitAccepted(t *testing.T, scenario string, n int, bound time.Duration) time.Duration {
	t.Helper()
	target := len(w.led.jobs(scenario)) + n
	return waitFor(t, bound, fmt.Sprintf("%d more accepted jobs in %s", n, scenario), func() error {
		if got := len(w.led.jobs(scenario)); got < target {
			return fmt.Errorf("%d of %d accepted", got, target)
		}
		return nil
	})
}

// verified are the sources of a verified result: the upstream's answer, by webhook, by poll, or by a row
// of the export (batch verification, when calls are scarce).
var verified = map[string]bool{contract.SourceWebhook: true, contract.SourcePoll: true, contract.SourceExport: true}

// settle waits until every job of scenario ("" for all) has a result, then requires exactly one, and
// a verified one, for each: 0 lost, 0 doubled. It returns how long the wait took.
func (w *world) settle(t *testing.T, scenario string, bound time.Duration) time.Duration {
	t.Helper()
	ids := w.led.jobs(scenario)
	took := waitFor(t, bound, "every accepted job has a result", func() error {
		missing := 0
		var example string
		for _, id := range ids {
			if n, _ := w.tally.count(id); n == 0 {
				missing++
				example = id
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d accepted jobs have no result (lost so far), e.g. %s", missing, len(ids), example)
		}
		return nil
	})
	doubled := 0
	for _, id := range ids {
		n, sources := w.tally.count(id)
		if n != 1 {
			doubled++
			t.Errorf("job %s: %d results on results.> (sources %q), want exactly 1", id, n, sources)
		}
		for _, s := range sources {
			if !verified[s] {
				t.Errorf("job %s: result from %q, want a verified one (webhook, poll or export)", id, s)
			}
		}
	}
	t.Logf("%s: %d accepted jobs, 0 lost, %d doubled; all results in %s", cmp.Or(scenario, "all scenarios"), len(ids), doubled, took.Round(100*time.Millisecond))
	return took
}

// trim keeps an answer's first words, so that answers differing only in detail count together.
func trim(s string) string {
	if i := strings.Index(s, ": nats:"); i > 0 {
		return s[:i]
	}
	if len(s) > 60 {
		return s[:60]
	}
	return s
}
