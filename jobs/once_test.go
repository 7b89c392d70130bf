package jobs_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
)

// fenceWindow is the duplicate window of the fence tests: short, so that a test can outlive it and
// Nats-Msg-Id no longer hides a broken fence.
const fenceWindow = time.Second

// resultMsg is a result as the deliverer makes it: Nats-Msg-Id is the job's id whoever publishes.
func resultMsg(id, source string) *nats.Msg {
	m := nats.NewMsg(contract.Default.ResultSubject("prompt"))
	m.Data = []byte(id + " " + source)
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(contract.HeaderBridgeSource, source)
	return m
}

// fenceMsgs returns the messages on a fence subject, in order, as "claim:<source>" or
// "done:<source>:<result seq>".
func (e world) fenceMsgs(t *testing.T, fence string) []string {
	t.Helper()
	var out []string
	for seq := uint64(1); ; seq++ {
		m, err := e.Res.Results.GetMsg(natstest.Ctx(t), seq, jetstream.WithGetMsgSubject(fence))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		s := m.Header.Get(contract.HeaderFence) + ":" + m.Header.Get(contract.HeaderBridgeSource)
		if r := m.Header.Get(contract.HeaderResultSeq); r != "" {
			s += ":" + r
		}
		out = append(out, s)
		seq = m.Sequence
	}
}

// outliveWindow waits until the duplicate window of a publish made at t0 is over. The wait is the
// fault being set up (a publisher that comes back after the window), not a synchronisation.
func outliveWindow(t0 time.Time) {
	if d := time.Until(t0.Add(fenceWindow + 500*time.Millisecond)); d > 0 {
		<-time.After(d)
	}
}

// publishWithoutDone publishes id's result (source webhook) as a publisher that stopped right after
// it, before its done message: the fence ends with its bare claim. It returns the fence and the
// result's sequence.
func (e world) publishWithoutDone(t *testing.T, id string) (string, uint64) {
	t.Helper()
	fence := contract.Default.ResultFenceSubject(id, false)
	first := jobs.NewOncePublisher(e.JS, contract.Default)
	first.SetSkipDone(true)
	seq, err := first.Publish(natstest.Ctx(t), fence, resultMsg(id, contract.SourceWebhook))
	if err != nil {
		t.Fatal(err)
	}
	return fence, seq
}

// alreadyAt asserts that err says the result is out at seq with source.
func alreadyAt(t *testing.T, who string, err error, seq uint64, source string) {
	t.Helper()
	out, ok := errors.AsType[*jobs.AlreadyPublishedError](err)
	if !ok || !errors.Is(err, jobs.ErrAlreadyPublished) {
		t.Fatalf("%s: %v, want already published at %d by %s", who, err, seq, source)
	}
	if out.Seq != seq || out.Source != source {
		t.Fatalf("%s: already published at %d by %q, want %d by %q", who, out.Seq, out.Source, seq, source)
	}
}

// TestOnceRacersAgree: three publishers race for each of many jobs, with different bodies and sources
// and the same Nats-Msg-Id, as the verifier, the reconciler and a timeout do. Each job gets exactly one
// result; one publisher is told it stored it, the others get ErrAlreadyPublished with the same sequence
// and source; the stored body is the winner's; the fence ends with a done message naming the result.
func TestOnceRacersAgree(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) {
			t.Parallel()
			e := fenceWorld(t, testworld.WithTopology(topo))
			ctx := natstest.Ctx(t)
			sources := []string{contract.SourceWebhook, contract.SourcePoll, contract.SourceTimeout}
			pubs := make([]*jobs.OncePublisher, len(sources))
			for i := range pubs {
				pubs[i] = jobs.NewOncePublisher(e.JS, contract.Default)
			}
			const n = 60
			type answer struct {
				seq    uint64
				source string
				won    bool
			}
			ids := make([]string, n)
			answers := make([][]answer, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				ids[i] = uuid.NewString()
				answers[i] = make([]answer, len(sources))
				for k, source := range sources {
					wg.Go(func() {
						<-start
						seq, err := pubs[k].Publish(ctx, contract.Default.ResultFenceSubject(ids[i], false), resultMsg(ids[i], source))
						if out, ok := errors.AsType[*jobs.AlreadyPublishedError](err); ok {
							answers[i][k] = answer{out.Seq, out.Source, false}
							return
						}
						if err != nil {
							t.Errorf("job %d, %s: %v", i, source, err)
							return
						}
						answers[i][k] = answer{seq, source, true}
					})
				}
			}
			close(start)
			wg.Wait()
			if t.Failed() {
				return
			}
			for i, id := range ids {
				won := 0
				for _, a := range answers[i] {
					if a.won {
						won++
					}
					if a.seq != answers[i][0].seq || a.source != answers[i][0].source {
						t.Fatalf("job %d: answers disagree: %+v", i, answers[i])
					}
				}
				a := answers[i][0]
				if won != 1 {
					t.Fatalf("job %d: %d publishers stored the result, want 1: %+v", i, won, answers[i])
				}
				res := e.msgsByID(t, id)
				if len(res) != 1 {
					t.Fatalf("job %d: %d results, want 1", i, len(res))
				}
				if res[0].Sequence != a.seq || res[0].Header.Get(contract.HeaderBridgeSource) != a.source ||
					string(res[0].Data) != id+" "+a.source {
					t.Fatalf("job %d: stored seq %d source %q body %q; answered seq %d source %s", i, res[0].Sequence,
						res[0].Header.Get(contract.HeaderBridgeSource), res[0].Data, a.seq, a.source)
				}
				fence := e.fenceMsgs(t, contract.Default.ResultFenceSubject(id, false))
				want := []string{"claim:" + a.source, "done:" + a.source + ":" + strconv.FormatUint(a.seq, 10)}
				if fmt.Sprint(fence) != fmt.Sprint(want) {
					t.Fatalf("job %d: fence %v, want %v", i, fence, want)
				}
			}
		})
	}
}

// TestOncePausedClaimantIsRefusedAfterTakeover: a publisher claims the fence and stops before its
// result (a crash, or SIGSTOP); the next publisher waits for it, takes the claim over and stores its
// own result, once. The first then resumes, after the duplicate window, so that Nats-Msg-Id no longer
// collapses its publish: the fence alone refuses its result, and it learns the winner.
func TestOncePausedClaimantIsRefusedAfterTakeover(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) {
			t.Parallel()
			e := fenceWorld(t, testworld.WithTopology(topo))
			ctx := natstest.Ctx(t)
			id := uuid.NewString()
			fence := contract.Default.ResultFenceSubject(id, false)

			claimed, resume := make(chan struct{}), make(chan struct{})
			sleeper := jobs.NewOncePublisher(e.JS, contract.Default)
			sleeper.SetAfterClaim(func(string, uint64) { close(claimed); <-resume })
			type result struct {
				seq uint64
				err error
			}
			done := make(chan result, 1)
			go func() {
				seq, err := sleeper.Publish(ctx, fence, resultMsg(id, contract.SourceWebhook))
				done <- result{seq, err}
			}()
			natstest.RecvWithin(t, claimed, 10*time.Second)

			other := jobs.NewOncePublisher(e.JS, contract.Default)
			other.SetTakeoverAfter(100 * time.Millisecond)
			seq, err := other.Publish(ctx, fence, resultMsg(id, contract.SourcePoll))
			if err != nil {
				t.Fatalf("publish over a stopped claim: %v", err)
			}
			outliveWindow(time.Now())
			close(resume)
			r := natstest.RecvWithin(t, done, 20*time.Second)
			alreadyAt(t, "resumed claimant", r.err, seq, contract.SourcePoll)

			res := e.msgsByID(t, id)
			if len(res) != 1 || res[0].Sequence != seq {
				t.Fatalf("%d results, want 1 at seq %d", len(res), seq)
			}
			want := []string{"claim:webhook", "claim:poll", "done:poll:" + strconv.FormatUint(seq, 10)}
			if got := e.fenceMsgs(t, fence); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("fence %v, want %v", got, want)
			}
		})
	}
}

// TestOnceResultWithoutDoneFoundAfterWindow: a publisher stores its result and stops before the done
// message. After the duplicate window another publisher finds the bare claim, takes it over and must
// find that result by reading the stream (Nats-Msg-Id no longer would): no second result, and it
// answers with the first one's sequence and source, and writes the done message for the next reader.
//
// The stream between the claim and the takeover is read message by message when it is short and
// through a consumer when it is long: scan "get" and "consumer".
func TestOnceResultWithoutDoneFoundAfterWindow(t *testing.T) {
	for _, tc := range []struct {
		name      string
		topo      testworld.Topology
		scanByGet uint64
	}{{"single/get", testworld.Single, 256}, {"single/consumer", testworld.Single, 0}, {"cluster/get", testworld.Cluster, 256},
		{"cluster/consumer", testworld.Cluster, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := fenceWorld(t, testworld.WithTopology(tc.topo))
			ctx := natstest.Ctx(t)
			id := uuid.NewString()
			fence, seq := e.publishWithoutDone(t, id)
			// Other jobs' results come between, as in a busy stream.
			busy := jobs.NewOncePublisher(e.JS, contract.Default)
			for range 20 {
				other := uuid.NewString()
				if _, err := busy.Publish(ctx, contract.Default.ResultFenceSubject(other, false), resultMsg(other, contract.SourceWebhook)); err != nil {
					t.Fatal(err)
				}
			}
			outliveWindow(time.Now())

			second := jobs.NewOncePublisher(e.JS, contract.Default)
			second.SetTakeoverAfter(100 * time.Millisecond)
			second.SetScanByGet(tc.scanByGet)
			_, err := second.Publish(ctx, fence, resultMsg(id, contract.SourceTimeout))
			alreadyAt(t, "publisher after the window", err, seq, contract.SourceWebhook)
			if res := e.msgsByID(t, id); len(res) != 1 {
				t.Fatalf("%d results, want 1", len(res))
			}
			// The done message is not waited for by its writer.
			want := []string{"claim:webhook", "claim:timeout", "done:webhook:" + strconv.FormatUint(seq, 10)}
			natstest.WaitFor(t, 10*time.Second, func() error {
				if got := e.fenceMsgs(t, fence); fmt.Sprint(got) != fmt.Sprint(want) {
					return fmt.Errorf("fence %v, want %v", got, want)
				}
				return nil
			})
			// The next one reads the done message: no takeover, nothing written.
			_, err = jobs.NewOncePublisher(e.JS, contract.Default).Publish(ctx, fence, resultMsg(id, contract.SourcePoll))
			alreadyAt(t, "publisher after the done message", err, seq, contract.SourceWebhook)
			if got := e.fenceMsgs(t, fence); len(got) != len(want) {
				t.Fatalf("fence %v after a reader, want %v", got, want)
			}
		})
	}
}

// TestOnceChainedTakeoverFindsFirstResult: the first publisher stores its result without done; the
// second takes its claim over and stops before looking for that result; the third takes the second's
// claim over. The result it must find was stored under the first claim, before the second: the search
// starts at the fence's first message, not at the claim being taken over.
func TestOnceChainedTakeoverFindsFirstResult(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) {
			t.Parallel()
			e := fenceWorld(t, testworld.WithTopology(topo))
			ctx := natstest.Ctx(t)
			id := uuid.NewString()
			fence, seq := e.publishWithoutDone(t, id)
			outliveWindow(time.Now())

			claimed, resume := make(chan struct{}), make(chan struct{})
			second := jobs.NewOncePublisher(e.JS, contract.Default)
			second.SetTakeoverAfter(0)
			second.SetAfterClaim(func(string, uint64) { close(claimed); <-resume })
			done := make(chan error, 1)
			go func() {
				_, err := second.Publish(ctx, fence, resultMsg(id, contract.SourcePoll))
				done <- err
			}()
			natstest.RecvWithin(t, claimed, 10*time.Second)

			third := jobs.NewOncePublisher(e.JS, contract.Default)
			third.SetTakeoverAfter(100 * time.Millisecond)
			_, err := third.Publish(ctx, fence, resultMsg(id, contract.SourceTimeout))
			alreadyAt(t, "third publisher", err, seq, contract.SourceWebhook)
			close(resume)
			alreadyAt(t, "second publisher", natstest.RecvWithin(t, done, 20*time.Second), seq, contract.SourceWebhook)
			if res := e.msgsByID(t, id); len(res) != 1 {
				t.Fatalf("%d results, want 1", len(res))
			}
		})
	}
}

// TestOnceReadsFenceOfEarlierDesign: a fence written by the earlier design (an empty message without
// Bridge-Fence, its result stored right after it in one atomic batch) counts as done: the result is
// the next message, and nothing is published.
func TestOnceReadsFenceOfEarlierDesign(t *testing.T) {
	e := fenceWorld(t)
	ctx := natstest.Ctx(t)
	id := uuid.NewString()
	fence := contract.Default.ResultFenceSubject(id, false)
	old := nats.NewMsg(fence)
	old.Header.Set(contract.HeaderBridgeSource, contract.SourcePoll)
	ack, err := e.JS.PublishMsg(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.JS.PublishMsg(ctx, resultMsg(id, contract.SourcePoll)); err != nil {
		t.Fatal(err)
	}
	outliveWindow(time.Now())
	_, err = jobs.NewOncePublisher(e.JS, contract.Default).Publish(ctx, fence, resultMsg(id, contract.SourceWebhook))
	alreadyAt(t, "publisher", err, ack.Sequence+1, contract.SourcePoll)
	if res := e.msgsByID(t, id); len(res) != 1 {
		t.Fatalf("%d results, want 1", len(res))
	}
}
