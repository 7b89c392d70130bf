package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

func completed(id, typ string) upstream.Job {
	raw, _ := json.Marshal(map[string]any{"job_id": id, "type": typ, "status": "completed", "is_prohibited": false,
		"categories": map[string]any{}, "created_at": "2026-01-02T03:04:05Z", "completed_at": "2026-01-02T03:04:06Z"})
	return upstream.Job{JobID: id, Type: typ, Status: upstream.StatusCompleted, Raw: raw}
}

// TestConsumeAcksRedeliversAndDedupes publishes three results through the bridge's real delivery path and
// a copy of one of them under another Nats-Msg-Id (as after the duplicate window), then runs the example:
// each job is handled once, the one whose handling fails is redelivered and handled on the second try,
// and the durable consumer ends with nothing pending or unacknowledged.
func TestConsumeAcksRedeliversAndDedupes(t *testing.T) {
	w := testworld.New(t)
	nc, js, d := w.NC, w.JS, w.Deliverer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := []string{"11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222",
		"33333333-3333-4333-8333-333333333333"}
	for i, id := range ids {
		if out, err := d.Deliver(ctx, completed(id, []string{"prompt", "image", "chat"}[i]), contract.SourceWebhook, time.Now()); err != nil || out != jobs.Published {
			t.Fatalf("deliver %s: %v %v", id, out, err)
		}
	}
	first := natstest.StreamMsgs(t, js, contract.Default.StreamResults)[0]
	dup := nats.NewMsg(first.Subject)
	dup.Data = first.Data
	dup.Header.Set("Nats-Msg-Id", ids[0]+".copy")
	dup.Header.Set(contract.HeaderBridgeSource, contract.SourceWebhook)
	if _, err := js.PublishMsg(ctx, dup); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	calls := map[string]int{}
	var handled []string
	err := Consume(ctx, nc, Config{Durable: "test", N: 3, Handle: func(r Result) error {
		mu.Lock()
		defer mu.Unlock()
		calls[r.JobID]++
		if r.JobID == ids[1] && calls[r.JobID] == 1 {
			return errors.New("database unavailable")
		}
		handled = append(handled, r.JobID)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ids[0], ids[2], ids[1]}
	if fmt.Sprint(handled) != fmt.Sprint(want) {
		t.Errorf("handled %v, want %v", handled, want)
	}
	if calls[ids[0]] != 1 || calls[ids[1]] != 2 || calls[ids[2]] != 1 {
		t.Errorf("handler calls %v, want 1, 2 and 1", calls)
	}
	cons, err := js.Consumer(ctx, contract.Default.StreamResults, "test")
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		// Acked up to the last message: three results, each between its fence's claim and done
		// messages (which the consumer filters out), then the copy: stream sequence 10.
		if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream != 10 {
			return fmt.Errorf("pending %d, ack pending %d, ack floor %d; want 0, 0, 10", info.NumPending,
				info.NumAckPending, info.AckFloor.Stream)
		}
		return nil
	})
}
