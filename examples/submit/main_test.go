package main

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/internal/natstest"
)

// fakeModeration registers a tiny "moderation" micro service on moderate.prompt that refuses the first
// request with BUSY (code 429, Retry-After 1) and accepts the next, recording each Idempotency-Key.
func fakeModeration(t *testing.T, url string) func() []string {
	t.Helper()
	nc, _ := natstest.Connect(t, url)
	var mu sync.Mutex
	var keys []string
	svc, err := micro.AddService(nc, micro.Config{Name: "moderation", Version: "0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	err = svc.AddEndpoint("prompt", micro.HandlerFunc(func(req micro.Request) {
		mu.Lock()
		keys = append(keys, req.Headers().Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		switch {
		case string(req.Data()) != `{"prompt":"is this fine?"}`:
			_ = req.Error("400", "INVALID_REQUEST: unexpected body "+string(req.Data()), nil)
		case n == 1:
			_ = req.Error("429", "BUSY: the upstream budget cannot carry this job now", nil,
				micro.WithHeaders(micro.Headers{"Retry-After": {"1"}}))
		default:
			_ = req.Respond([]byte(`{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f","status":"queued"}`))
		}
	}), micro.WithEndpointSubject("moderate.prompt"))
	if err != nil {
		t.Fatal(err)
	}
	// The subscription must have reached the server before the test's own connection asks.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), keys...)
	}
}

func TestSubmitRetriesBusyWithTheSameKey(t *testing.T) {
	srv := natstest.RunServer(t)
	keys := fakeModeration(t, srv.ClientURL())
	nc, _ := natstest.Connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var waits []time.Duration
	reply, err := Submit(ctx, nc, Request{Modality: "prompt", Fields: map[string]string{"prompt": "is this fine?"},
		Key: "order-42", OnBusy: func(d time.Duration) { waits = append(waits, d) }})
	if err != nil {
		t.Fatal(err)
	}
	if reply != (Reply{JobID: "7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f", Status: "queued"}) {
		t.Errorf("reply %+v", reply)
	}
	if got := keys(); len(got) != 2 || got[0] != "order-42" || got[1] != "order-42" {
		t.Errorf("Idempotency-Keys seen %q, want [order-42 order-42]", got)
	}
	if len(waits) != 1 || waits[0] != time.Second {
		t.Errorf("BUSY waits %v, want [1s]", waits)
	}
}

func TestSubmitReturnsOtherErrors(t *testing.T) {
	srv := natstest.RunServer(t)
	fakeModeration(t, srv.ClientURL())
	nc, _ := natstest.Connect(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Submit(ctx, nc, Request{Modality: "prompt", Fields: map[string]string{"prompt": "other"}, Key: "k"})
	var se *ServiceError
	if !errors.As(err, &se) || se.Code != "400" || se.Description != `INVALID_REQUEST: unexpected body {"prompt":"other"}` {
		t.Errorf("err = %v, want the 400 service error", err)
	}
}
