package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// TestListenPrintsLateResults times a job out and then completes it through the bridge's real delivery
// path: the listener sees the late result on results.late.image, and not the timeout result.
func TestListenPrintsLateResults(t *testing.T) {
	w := testworld.New(t)
	nc, store, d := w.NC, w.Store, w.Deliverer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var out bytes.Buffer
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- Listen(ctx, nc, Config{N: 1, Out: &out, Ready: ready}) }()
	natstest.RecvWithin(t, ready, 10*time.Second)

	const id = "44444444-4444-4444-8444-444444444444"
	past := time.Now().Add(-time.Hour).UTC()
	if _, err := store.Create(ctx, jobs.Record{JobID: id, Modality: "image", State: jobs.StatePending,
		Origin: jobs.OriginSubmit, SubmittedAt: past, Deadline: past.Add(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if o, err := d.TimeOut(ctx, id, nil); err != nil || o != jobs.Published {
		t.Fatalf("time out: %v %v", o, err)
	}
	raw, _ := json.Marshal(map[string]any{"job_id": id, "type": "image", "status": "completed", "is_prohibited": true,
		"categories": map[string]any{"nudity": true}, "created_at": past, "completed_at": time.Now().UTC()})
	job := upstream.Job{JobID: id, Type: "image", Status: upstream.StatusCompleted, Raw: raw}
	if o, err := d.Deliver(ctx, job, contract.SourcePoll, time.Now()); err != nil || o != jobs.PublishedLate {
		t.Fatalf("deliver late: %v %v", o, err)
	}
	if err := natstest.RecvWithin(t, done, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	want := "late results.late.image " + id + " completed prohibited (Nats-Msg-Id " + id + ".late, source poll)\n"
	if out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
}
