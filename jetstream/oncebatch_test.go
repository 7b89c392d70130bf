package jetstream_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/internal/natstest"
	bjs "github.com/evershield/bridge/jetstream"
)

// TestOncePublisherGroupsKeepOnePerFence: 200 jobs published at once through one OncePublisher, each
// by two publishers with different bodies (a verified result and a timeout racing), so the groups mix
// first and second publishes of the same fence. Each fence lets exactly one through; the winner gets the
// sequence of its own message, the loser ErrAlreadyPublished, and RESULTS holds one fence and one
// result per job.
func TestOncePublisherGroupsKeepOnePerFence(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	nc, js := natstest.Connect(t, n.ClientURL())
	ctx := testCtx(t)
	res, err := bjs.Provision(ctx, js, bjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p := bjs.NewOncePublisher(nc)
	const jobs = 200
	type answer struct {
		body string
		seq  uint64
		err  error
	}
	answers := make([][2]answer, jobs)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range jobs {
		for k, source := range []string{"webhook", "timeout"} {
			wg.Go(func() {
				id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
				msg := nats.NewMsg(bjs.ResultSubject("prompt"))
				msg.Data = []byte(id + " " + source)
				msg.Header.Set(jetstream.MsgIDHeader, id+"."+source) // distinct ids: only the fence collapses them
				<-start
				seq, err := p.Publish(ctx, bjs.ResultFenceSubject(id, false), nats.Header{bjs.HeaderBridgeSource: {source}}, msg)
				answers[i][k] = answer{string(msg.Data), seq, err}
			})
		}
	}
	close(start)
	wg.Wait()

	for i, a := range answers {
		won := 0
		for _, x := range a {
			switch {
			case x.err == nil:
				won++
				m, err := res.Results.GetMsg(ctx, x.seq)
				if err != nil {
					t.Fatalf("job %d: get seq %d: %v", i, x.seq, err)
				}
				if string(m.Data) != x.body {
					t.Errorf("job %d: seq %d holds %q, want %q", i, x.seq, m.Data, x.body)
				}
			case !errors.Is(x.err, bjs.ErrAlreadyPublished):
				t.Errorf("job %d: %v", i, x.err)
			}
		}
		if won != 1 {
			t.Errorf("job %d: %d publishes stored, want 1", i, won)
		}
	}
	info, err := res.Results.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 400 {
		t.Errorf("RESULTS holds %d messages, want 400 (a fence and a result per job)", info.State.Msgs)
	}
}
