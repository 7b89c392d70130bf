package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream"
)

// world is a test world (see [testworld.World]) with the helpers of this package's tests.
type world struct{ *testworld.World }

func newWorld(t *testing.T, opts ...testworld.Option) world {
	t.Helper()
	return world{testworld.New(t, opts...)}
}

// fenceWorld is a world whose duplicate window, fenceWindow, a test can outlive.
func fenceWorld(t *testing.T, opts ...testworld.Option) world {
	t.Helper()
	return newWorld(t, append(opts, testworld.WithProvision(natsx.ProvisionConfig{DuplicateWindow: fenceWindow}))...)
}

// overdueJob records a pending job whose deadline has passed and returns its terminal upstream answer.
func (w world) overdueJob(t *testing.T, ctx context.Context, typ string) upstream.Job {
	t.Helper()
	id := uuid.NewString()
	now := time.Now().UTC()
	if _, err := w.Store.Create(ctx, jobs.Record{JobID: id, Modality: typ, State: jobs.StatePending, Origin: jobs.OriginSubmit,
		SubmittedAt: now.Add(-10 * time.Minute), Deadline: now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	f := false
	raw, _ := json.Marshal(map[string]any{"job_id": id, "type": typ, "status": "completed", "is_prohibited": false,
		"categories": map[string]any{"custom": map[string]any{}}, "created_at": now.Add(-10 * time.Minute), "completed_at": now})
	return upstream.Job{JobID: id, Type: typ, Status: upstream.StatusCompleted, IsProhibited: &f, Raw: raw}
}

// msgsByID returns the RESULTS messages whose Nats-Msg-Id is msgID.
func (w world) msgsByID(t *testing.T, msgID string) []*jetstream.RawStreamMsg {
	t.Helper()
	var out []*jetstream.RawStreamMsg
	for _, m := range natstest.StreamMsgs(t, w.JS, contract.Default.StreamResults) {
		if m.Header.Get(jetstream.MsgIDHeader) == msgID {
			out = append(out, m)
		}
	}
	return out
}

// TestWebhookAndTimeoutRaceOneResult races Deliver (a verified webhook) against TimeOut for the same
// overdue job, many times: each job gets exactly one message on results.<type>, and its record agrees
// with it: delivered by the webhook, or timed out with the verified result once on results.late.<type>.
func TestWebhookAndTimeoutRaceOneResult(t *testing.T) {
	for _, topo := range testworld.Topologies() {
		t.Run(topo.Name, func(t *testing.T) {
			w := newWorld(t, testworld.WithTopology(topo))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			const n = 30
			batch := make([]upstream.Job, n)
			for i := range batch {
				batch[i] = w.overdueJob(t, ctx, "prompt")
			}
			var wg sync.WaitGroup
			errs := make(chan error, 2*n)
			for _, j := range batch {
				wg.Go(func() {
					if _, err := w.Deliverer.Deliver(ctx, j, contract.SourceWebhook, time.Now()); err != nil {
						errs <- fmt.Errorf("deliver %s: %w", j.JobID, err)
					}
				})
				wg.Go(func() {
					if _, err := w.Deliverer.TimeOut(ctx, j.JobID, nil); err != nil {
						errs <- fmt.Errorf("timeout %s: %w", j.JobID, err)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			var delivered, timedOut int
			for _, j := range batch {
				rec, _, err := w.Store.Get(ctx, j.JobID)
				if err != nil {
					t.Fatal(err)
				}
				primary := w.msgsByID(t, j.JobID)
				late := w.msgsByID(t, j.JobID+contract.LateSuffix)
				if len(primary) != 1 || primary[0].Subject != contract.Default.ResultSubject("prompt") {
					t.Fatalf("job %s: %d primary results, want 1 on results.prompt", j.JobID, len(primary))
				}
				src := primary[0].Header.Get(contract.HeaderBridgeSource)
				if rec.ResultSeq != primary[0].Sequence || rec.Source != src {
					t.Fatalf("job %s: record seq %d source %s, stream seq %d source %s", j.JobID, rec.ResultSeq, rec.Source,
						primary[0].Sequence, src)
				}
				switch rec.State {
				case jobs.StateDelivered:
					delivered++
					if src != contract.SourceWebhook || len(late) != 0 {
						t.Fatalf("job %s delivered: source %s, %d late results", j.JobID, src, len(late))
					}
				case jobs.StateTimedOut:
					timedOut++
					if src != contract.SourceTimeout || len(late) != 1 || late[0].Subject != contract.Default.LateResultSubject("prompt") ||
						rec.LateSeq != late[0].Sequence || rec.LateDeliveredAt == nil {
						t.Fatalf("job %s timed out: source %s, %d late results, record %+v", j.JobID, src, len(late), rec)
					}
				default:
					t.Fatalf("job %s: state %s after the race", j.JobID, rec.State)
				}
			}
			t.Logf("%d delivered by the webhook, %d timed out first", delivered, timedOut)
		})
	}
}

// TestTimedOutJobCompletingLaterPublishesLateOnce: after a timeout result, the verified result goes to
// results.late.<type> exactly once, however often and concurrently it is delivered.
func TestTimedOutJobCompletingLaterPublishesLateOnce(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j := w.overdueJob(t, ctx, "image")
	if out, err := w.Deliverer.TimeOut(ctx, j.JobID, nil); err != nil || out != jobs.Published {
		t.Fatalf("timeout: %v %v", out, err)
	}
	var wg sync.WaitGroup
	outcomes := make(chan jobs.Outcome, 8)
	for range 8 {
		wg.Go(func() {
			out, err := w.Deliverer.Deliver(ctx, j, contract.SourcePoll, time.Now())
			if err != nil {
				t.Errorf("deliver: %v", err)
			}
			outcomes <- out
		})
	}
	wg.Wait()
	close(outcomes)
	late := 0
	for o := range outcomes {
		if o == jobs.PublishedLate {
			late++
		}
	}
	if late != 1 {
		t.Fatalf("%d deliveries reported PublishedLate, want 1", late)
	}
	if out, err := w.Deliverer.Deliver(ctx, j, contract.SourceWebhook, time.Now()); err != nil || out != jobs.AlreadyDelivered {
		t.Fatalf("deliver after late: %v %v, want already_delivered", out, err)
	}
	primary := w.msgsByID(t, j.JobID)
	lateMsgs := w.msgsByID(t, j.JobID+contract.LateSuffix)
	if len(primary) != 1 || primary[0].Header.Get(contract.HeaderBridgeSource) != contract.SourceTimeout {
		t.Fatalf("%d primary results, want the one timeout result", len(primary))
	}
	if len(lateMsgs) != 1 || lateMsgs[0].Subject != contract.Default.LateResultSubject("image") {
		t.Fatalf("%d late results, want 1 on results.late.image", len(lateMsgs))
	}
	var body map[string]any
	_ = json.Unmarshal(lateMsgs[0].Data, &body)
	if body["status"] != "completed" || body["is_prohibited"] != false {
		t.Fatalf("late result is not the verified answer: %v", body)
	}
	var timeoutBody map[string]any
	_ = json.Unmarshal(primary[0].Data, &timeoutBody)
	if timeoutBody["error_code"] != "BRIDGE_TIMEOUT" || timeoutBody["status"] != "failed" {
		t.Fatalf("timeout result %v", timeoutBody)
	}
}
