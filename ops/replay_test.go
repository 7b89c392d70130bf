package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/upstream/simulator"
)

// seedResults stores n results alternating results.prompt and results.image and returns the job ids
// and sequences in order.
func seedResults(w *world, n int) (ids []string, seqs []uint64) {
	for i := range n {
		id := uuid.NewString()
		typ := "prompt"
		if i%2 == 1 {
			typ = "image"
		}
		seq := w.publish(contract.Default.ResultSubject(typ), id, fmt.Sprintf(`{"job_id":%q,"type":%q,"n":%d}`, id, typ, i),
			contract.HeaderBridgeSource, contract.SourceWebhook)
		ids, seqs = append(ids, id), append(seqs, seq)
	}
	return ids, seqs
}

// replayTarget creates a stream storing replay.> with a duplicate window, as an operator would to keep
// replayed messages.
func replayTarget(w *world) {
	w.tb.Helper()
	_, err := w.js.CreateStream(natstest.CtxWithin(w.tb, 10*time.Second), jetstream.StreamConfig{
		Name: "REPLAYED", Subjects: []string{contract.Default.SubjectReplayPrefix + ">"}, Duplicates: 10 * time.Minute,
	})
	if err != nil {
		w.tb.Fatal(err)
	}
}

// originalSeqs are the Bridge-Original-Seq headers of the replayed messages, in order.
func originalSeqs(t *testing.T, w *world) []uint64 {
	t.Helper()
	var out []uint64
	for _, m := range w.streamMsgs("REPLAYED") {
		seq, err := strconv.ParseUint(m.Header.Get(contract.HeaderOriginalSeq), 10, 64)
		if err != nil {
			t.Fatalf("replayed message without %s: %v", contract.HeaderOriginalSeq, m.Header)
		}
		out = append(out, seq)
	}
	return out
}

func equalSeqs(t *testing.T, got, want []uint64) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replayed sequences\n got %v\nwant %v", got, want)
	}
}

func TestReplayToPrefixGivesSelectionOnceInOrder(t *testing.T) {
	w := newWorld(t)
	replayTarget(w)
	ids, seqs := seedResults(w, 30)
	ctx := natstest.CtxWithin(t, 30*time.Second)

	res, err := Replay(ctx, ReplayConfig{JS: w.js, Log: w.log, Name: "prompts",
		Selection: Selection{Stream: contract.Default.StreamResults, Subjects: []string{"results.prompt"}, FromSeq: seqs[3], ToSeq: seqs[24]}})
	if err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for i, s := range seqs {
		if i%2 == 0 && s >= seqs[3] && s <= seqs[24] {
			want = append(want, s)
		}
	}
	equalSeqs(t, originalSeqs(t, w), want)
	if !res.Done || res.Published != len(want) || res.Duplicates != 0 {
		t.Errorf("result %+v, want done with %d published", res, len(want))
	}
	// Subjects, bodies and headers as the originals, under the prefix.
	for _, m := range w.streamMsgs("REPLAYED") {
		seq, _ := strconv.ParseUint(m.Header.Get(contract.HeaderOriginalSeq), 10, 64)
		orig := w.streamMsgs(contract.Default.StreamResults)[seq-1]
		if m.Subject != "replay."+orig.Subject || string(m.Data) != string(orig.Data) ||
			m.Header.Get(contract.HeaderOriginalSubject) != orig.Subject || m.Header.Get(contract.HeaderBridgeSource) != contract.SourceWebhook ||
			m.Header.Get(contract.HeaderOriginalMsgID) != orig.Header.Get(jetstream.MsgIDHeader) || m.Header.Get(contract.HeaderReplay) != "prompts" {
			t.Errorf("replayed %s %v does not match original %s %v", m.Subject, m.Header, orig.Subject, orig.Header)
		}
	}
	// RESULTS itself is untouched: live subscribers see nothing twice.
	if got := len(w.streamMsgs(contract.Default.StreamResults)); got != len(ids) {
		t.Errorf("RESULTS has %d messages, want %d", got, len(ids))
	}
}

func TestReplaySelections(t *testing.T) {
	w := newWorld(t)
	replayTarget(w)
	ids, seqs := seedResults(w, 12)
	late := w.publish(contract.Default.LateResultSubject("prompt"), ids[2]+contract.LateSuffix, `{"late":true}`)
	all := append(append([]uint64(nil), seqs...), late)

	tests := []struct {
		name    string
		sel     Selection
		want    []uint64
		wantErr error
	}{
		{name: "everything", sel: Selection{Stream: contract.Default.StreamResults}, want: all},
		{name: "job ids with late result", sel: Selection{Stream: contract.Default.StreamResults, JobIDs: []string{ids[2], ids[7]}},
			want: []uint64{seqs[2], seqs[7], late}},
		{name: "wildcard subject", sel: Selection{Stream: contract.Default.StreamResults, Subjects: []string{"results.late.>"}}, want: []uint64{late}},
		{name: "time window excludes all", sel: Selection{Stream: contract.Default.StreamResults, Since: time.Now().Add(time.Hour)}, want: nil},
		{name: "time window includes all", sel: Selection{Stream: contract.Default.StreamResults, Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Hour)}, want: all},
		{name: "empty subject", sel: Selection{Stream: contract.Default.StreamResults, Subjects: []string{"results.video"}}, want: nil},
		{name: "bad stream", sel: Selection{Stream: "JOBS"}, wantErr: ErrInvalid},
		{name: "bad range", sel: Selection{Stream: contract.Default.StreamResults, FromSeq: 5, ToSeq: 2}, wantErr: ErrInvalid},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := fmt.Sprintf("replay.t%d.", i)
			res, err := Replay(natstest.CtxWithin(t, 30*time.Second), ReplayConfig{JS: w.js, Log: w.log, Name: fmt.Sprintf("sel-%d", i),
				Selection: tt.sel, Prefix: prefix, Idle: 200 * time.Millisecond})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			var got []uint64
			for _, m := range w.streamMsgs("REPLAYED") {
				if len(m.Subject) > len(prefix) && m.Subject[:len(prefix)] == prefix {
					seq, _ := strconv.ParseUint(m.Header.Get(contract.HeaderOriginalSeq), 10, 64)
					got = append(got, seq)
				}
			}
			equalSeqs(t, got, tt.want)
			if !res.Done || res.Published != len(tt.want) {
				t.Errorf("result %+v", res)
			}
		})
	}
}

func TestReplayResumes(t *testing.T) {
	w := newWorld(t)
	replayTarget(w)
	_, seqs := seedResults(w, 40)
	base := ReplayConfig{JS: w.js, Log: w.log, Name: "resume", Selection: Selection{Stream: contract.Default.StreamResults}, Checkpoint: 7}

	// A run capped at 5 messages, then one interrupted (ctx cancelled) after 10 more.
	cfg := base
	cfg.Max = 5
	res, err := Replay(natstest.CtxWithin(t, 30*time.Second), cfg)
	if err != nil || res.Done || res.Published != 5 {
		t.Fatalf("first run: %+v, %v", res, err)
	}
	ctx, cancel := context.WithCancel(natstest.CtxWithin(t, 30*time.Second))
	cfg = base
	cfg.Progress = func(p ReplayProgress) {
		if p.Published == 10 {
			cancel()
		}
	}
	res, err = Replay(ctx, cfg)
	if !errors.Is(err, context.Canceled) || !res.Resumed || res.ResumedAfter != seqs[4] || res.Published != 10 {
		t.Fatalf("interrupted run: %+v, %v", res, err)
	}
	// Messages published meanwhile are after the replay's end, fixed at its first start.
	w.publish(contract.Default.ResultSubject("prompt"), uuid.NewString(), `{}`)

	// Simulate a crash after the last checkpoint: the stored progress is behind what was published.
	e, err := w.js.KeyValue(natstest.CtxWithin(t, 5*time.Second), contract.Default.BucketReplay)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := e.Get(natstest.CtxWithin(t, 5*time.Second), "resume")
	if err != nil {
		t.Fatal(err)
	}
	var st replayState
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		t.Fatal(err)
	}
	if st.LastSeq != seqs[14] {
		t.Fatalf("saved progress %d, want %d", st.LastSeq, seqs[14])
	}
	st.LastSeq = seqs[11]
	b, _ := json.Marshal(st)
	if _, err := e.Put(natstest.CtxWithin(t, 5*time.Second), "resume", b); err != nil {
		t.Fatal(err)
	}

	res, err = Replay(natstest.CtxWithin(t, 30*time.Second), base)
	if err != nil || !res.Done || res.Duplicates != 3 || res.LastSeq != seqs[39] || res.EndSeq != seqs[39] {
		t.Fatalf("resumed run: %+v, %v", res, err)
	}
	equalSeqs(t, originalSeqs(t, w), seqs)

	if _, err := Replay(natstest.CtxWithin(t, 10*time.Second), base); !errors.Is(err, ErrReplayDone) {
		t.Fatalf("finished replay again: %v, want ErrReplayDone", err)
	}
	other := base
	other.Selection.Subjects = []string{"results.image"}
	if _, err := Replay(natstest.CtxWithin(t, 10*time.Second), other); !errors.Is(err, ErrReplayConflict) {
		t.Fatalf("same name, other selection: %v, want ErrReplayConflict", err)
	}
	again := base
	again.Restart, again.Prefix = true, "replay.again."
	if res, err := Replay(natstest.CtxWithin(t, 30*time.Second), again); err != nil || res.Published != 41 || res.Resumed {
		t.Fatalf("restarted replay: %+v %v", res, err)
	}
}

func TestReplayCoreNATSTargetAndDryRun(t *testing.T) {
	w := newWorld(t)
	_, seqs := seedResults(w, 20)
	sub, err := w.nc.SubscribeSync("replay.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	dry, err := Replay(natstest.CtxWithin(t, 30*time.Second), ReplayConfig{JS: w.js, Log: w.log, Name: "dry", DryRun: true,
		Selection: Selection{Stream: contract.Default.StreamResults, Subjects: []string{"results.image"}}})
	if err != nil || dry.Published != 10 || !dry.Done {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	if _, err := w.js.KeyValue(natstest.CtxWithin(t, 5*time.Second), contract.Default.BucketReplay); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("dry run created the progress bucket: %v", err)
	}
	if n, _, _ := sub.Pending(); n != 0 {
		t.Fatalf("dry run published %d messages", n)
	}

	res, err := Replay(natstest.CtxWithin(t, 30*time.Second), ReplayConfig{JS: w.js, Log: w.log, Name: "core", Rate: 500,
		Selection: Selection{Stream: contract.Default.StreamResults, Subjects: []string{"results.image"}}})
	if err != nil || res.Published != 10 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	var got []uint64
	for range 10 {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != "replay.results.image" {
			t.Errorf("subject %s", m.Subject)
		}
		seq, _ := strconv.ParseUint(m.Header.Get(contract.HeaderOriginalSeq), 10, 64)
		got = append(got, seq)
	}
	var want []uint64
	for i := 1; i < len(seqs); i += 2 {
		want = append(want, seqs[i])
	}
	equalSeqs(t, got, want)
	if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
		t.Errorf("extra message %s %v", m.Subject, m.Header)
	}
}

func TestReplayRefusesBridgeStreamsAsTarget(t *testing.T) {
	w := newWorld(t)
	seedResults(w, 2)
	_, err := Replay(natstest.CtxWithin(t, 10*time.Second), ReplayConfig{JS: w.js, Log: w.log, Name: "loop", Prefix: "results.",
		Selection: Selection{Stream: contract.Default.StreamResults}})
	if !errors.Is(err, ErrTargetIsBridgeStream) {
		t.Fatalf("err = %v, want ErrTargetIsBridgeStream", err)
	}
	if n := len(w.streamMsgs(contract.Default.StreamResults)); n != 2 {
		t.Fatalf("RESULTS has %d messages, want 2", n)
	}
	_, err = Replay(natstest.CtxWithin(t, 10*time.Second), ReplayConfig{JS: w.js, Name: "rv", Reverify: true,
		Selection: Selection{Stream: contract.Default.StreamResults}})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("reverify of RESULTS: %v, want ErrInvalid", err)
	}
}

// TestReverifyDoesNotDoubleResults re-verifies every webhook with the verifier running: the jobs'
// results are out, so nothing is published again and the upstream is not asked again.
func TestReverifyDoesNotDoubleResults(t *testing.T) {
	w := newWorld(t)
	w.withSimulator(simulator.Config{})
	w.startVerifier(5)
	var ids []string
	for range 6 {
		id := w.submit("prompt")
		w.waitTerminal(id)
		w.webhook("prompt", id)
		ids = append(ids, id)
	}
	// A second webhook of the first job under another Nats-Msg-Id (as a redrive stores it).
	w.publish(contract.Default.WebhookSubject("prompt"), ids[0]+".redrive.1", fmt.Sprintf(`{"job_id":%q,"status":"completed"}`, ids[0]))
	w.verifierIdle(7)
	before := w.resultsPerJob()
	gets := w.sim.CallCount(simulator.EndpointJob)
	if len(before) != 6 {
		t.Fatalf("results before re-verification: %v", before)
	}

	res, err := Replay(natstest.CtxWithin(t, 30*time.Second), ReplayConfig{JS: w.js, Log: w.log, Name: "reverify", Reverify: true,
		Selection: Selection{Stream: contract.Default.StreamWebhooks}})
	if err != nil || res.Published != 7 || res.Duplicates != 1 {
		t.Fatalf("reverify: %+v %v (the two webhooks of one job share one re-verification id)", res, err)
	}
	w.verifierIdle(13)
	after := w.resultsPerJob()
	for _, id := range ids {
		if after[id] != 1 {
			t.Errorf("job %s has %d results", id, after[id])
		}
	}
	if len(after) != 6 {
		t.Errorf("results after: %v", after)
	}
	if got := w.sim.CallCount(simulator.EndpointJob); got != gets {
		t.Errorf("re-verification asked the upstream %d more times", got-gets)
	}
	for _, m := range w.streamMsgs(contract.Default.StreamWebhooks)[7:] {
		if id := m.Header.Get(jetstream.MsgIDHeader); id[36:] != ".reverify.reverify" {
			t.Errorf("re-verified webhook Nats-Msg-Id %q", id)
		}
	}
}

func TestPacerStopsOnCancel(t *testing.T) {
	p := newPacer(1.0 / 3600) // one an hour
	ctx, cancel := context.WithCancel(context.Background())
	if err := pace(ctx, p); err != nil { // the first goes at once
		t.Fatalf("first wait: %v", err)
	}
	cancel()
	if err := pace(ctx, p); err == nil {
		t.Error("the second wait of an hourly pacer returned on a cancelled ctx without an error")
	}
	if err := pace(ctx, newPacer(0)); err != nil {
		t.Errorf("unpaced wait: %v", err)
	}
}

// stallingJS is a JetStream whose first ordered consumer never delivers while it says messages wait for
// it, as one whose pull request a loaded cluster lost (the consumer just made, not yet known to the
// server the client is on).
type stallingJS struct {
	jetstream.JetStream
	made atomic.Int32
}

func (s *stallingJS) OrderedConsumer(ctx context.Context, stream string, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.JetStream.OrderedConsumer(ctx, stream, cfg)
	if err != nil || s.made.Add(1) > 1 {
		return c, err
	}
	return stalledConsumer{c}, nil
}

type stalledConsumer struct{ jetstream.Consumer }

func (stalledConsumer) Messages(...jetstream.PullMessagesOpt) (jetstream.MessagesContext, error) {
	return stalledIterator{}, nil
}

func (stalledConsumer) Info(context.Context) (*jetstream.ConsumerInfo, error) {
	return &jetstream.ConsumerInfo{NumPending: 1}, nil
}

// stalledIterator waits a little on each Next, as a pull would, and gives nothing.
type stalledIterator struct{}

func (stalledIterator) Next(...jetstream.NextOpt) (jetstream.Msg, error) {
	<-time.After(20 * time.Millisecond)
	return nil, nats.ErrTimeout
}
func (stalledIterator) Stop()  {}
func (stalledIterator) Drain() {}

// TestReplayOutlivesAStalledConsumer: a consumer that delivers nothing while the server says messages wait
// is made again from where the replay stands, and the replay finishes with every message; the replay
// waited for its deadline before.
func TestReplayOutlivesAStalledConsumer(t *testing.T) {
	w := newWorld(t)
	replayTarget(w)
	_, seqs := seedResults(w, 4)
	js := &stallingJS{JetStream: w.js}
	res, err := Replay(natstest.CtxWithin(t, 20*time.Second), ReplayConfig{JS: js, Log: w.log, Name: "stalled",
		Idle: 100 * time.Millisecond, Selection: Selection{Stream: contract.Default.StreamResults}})
	if err != nil || !res.Done || res.Published != 4 {
		t.Fatalf("replay: %+v (%v), want done with 4 published", res, err)
	}
	equalSeqs(t, originalSeqs(t, w), seqs)
	if n := js.made.Load(); n != 2 {
		t.Errorf("%d ordered consumers made, want 2: the stalled one and its replacement", n)
	}
}
