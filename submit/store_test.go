package submit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// errJobsDown is what the unavailable JOBS bucket answers.
var errJobsDown = errors.New("JOBS unavailable")

// unavailableKV is the JOBS bucket with writes switched off: Create and Update fail while down is set,
// as they do when the bucket's stream has no quorum.
type unavailableKV struct {
	jetstream.KeyValue
	down    atomic.Bool
	refused atomic.Int64
}

func (kv *unavailableKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if kv.down.Load() {
		kv.refused.Add(1)
		return 0, errJobsDown
	}
	return kv.KeyValue.Create(ctx, key, value, opts...)
}

func (kv *unavailableKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if kv.down.Load() {
		kv.refused.Add(1)
		return 0, errJobsDown
	}
	return kv.KeyValue.Update(ctx, key, value, rev)
}

// TestUpstreamAcceptsButJobsWriteFails covers a path nothing reached (issue 12): the upstream accepts a
// job but its JOBS record cannot be written. The reply is code 500 with a STORE_FAILED description and
// the job_id in the body (the caller can track the job); the record is tried StoreAttempts times; a
// retry with the same idempotency key once JOBS is back records the job without a second submission.
func TestUpstreamAcceptsButJobsWriteFails(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	kv := &unavailableKV{KeyValue: e.Res.Jobs}
	kv.down.Store(true)
	e.startSubmitter(func(c *Config) { c.Store = jobs.NewStore(kv) })
	hdr := map[string]string{HeaderIdempotencyKey: "order-store-1"}
	body := []byte(`{"prompt": "hello"}`)

	reply := e.Request(contract.Default.SubjectSubmit+"prompt", body, hdr)
	var got Reply
	if err := json.Unmarshal(reply.Data, &got); err != nil {
		t.Fatalf("reply body %q: %v", reply.Data, err)
	}
	sims := e.Sim.Jobs()
	if len(sims) != 1 {
		t.Fatalf("%d upstream jobs, want 1", len(sims))
	}
	id := sims[0].ID
	code, desc := reply.Header.Get(micro.ErrorCodeHeader), reply.Header.Get(micro.ErrorHeader)
	// The store's own wording of the error sits between the description and the bucket's error.
	wantDesc := fmt.Sprintf("STORE_FAILED: job %s was accepted by the upstream but not recorded; retry with the same "+
		"Idempotency-Key, or track the job_id yourself: ", id)
	if code != "500" || !strings.HasPrefix(desc, wantDesc) || !strings.HasSuffix(desc, ": JOBS unavailable") {
		t.Fatalf("reply %q %q, want 500 %q...: JOBS unavailable", code, desc, wantDesc)
	}
	if got != (Reply{JobID: id, Status: "queued"}) {
		t.Fatalf("reply body %+v, want job_id %s, status queued", got, id)
	}
	if n := kv.refused.Load(); n != 5 {
		t.Fatalf("%d JOBS writes tried, want 5 (StoreAttempts)", n)
	}
	if _, _, err := e.Store.Get(natstest.CtxWithin(t, 5*time.Second), id); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("record of %s: %v, want none", id, err)
	}

	kv.down.Store(false)
	retry := e.Request(contract.Default.SubjectSubmit+"prompt", body, hdr)
	if code := retry.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("retry: %s %s", code, retry.Header.Get(micro.ErrorHeader))
	}
	if err := json.Unmarshal(retry.Data, &got); err != nil || got.JobID != id {
		t.Fatalf("retry reply %q: %v, want job %s", retry.Data, err, id)
	}
	if rec := e.Record(id); rec.State != jobs.StatePending || rec.Origin != jobs.OriginSubmit || rec.IdempotencyKey != "order-store-1" {
		t.Fatalf("record %+v, want pending, origin submit, the key", rec)
	}
	if n := e.Sim.CallCount(simulator.EndpointSubmit); n != 1 {
		t.Fatalf("%d upstream submissions, want 1", n)
	}
}
