package ops

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
	"github.com/evershield/bridge/verify"
)

// world is one test's world (see [testworld.World]) under the short names of this package's tests,
// with a simulator and a verifier to start.
type world struct {
	*testworld.World
	tb    testing.TB
	nc    *nats.Conn
	js    jetstream.JetStream
	res   natsx.Resources
	store *jobs.Store
	log   zerolog.Logger
	sim   *simulator.Simulator
	api   *upstream.Client
}

func newWorld(tb testing.TB) *world {
	tb.Helper()
	w := testworld.New(tb)
	return &world{World: w, tb: tb, nc: w.NC, js: w.JS, res: w.Res, store: w.Store, log: w.Log}
}

// publish stores a message with the given Nats-Msg-Id and returns its sequence.
func (w *world) publish(subject, msgID string, data string, hdr ...string) uint64 {
	w.tb.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		m.Header.Set(hdr[i], hdr[i+1])
	}
	ack, err := w.js.PublishMsg(natstest.CtxWithin(w.tb, 10*time.Second), m)
	if err != nil {
		w.tb.Fatalf("publish %s: %v", subject, err)
	}
	if ack.Duplicate {
		w.tb.Fatalf("publish %s %s: duplicate", subject, msgID)
	}
	return ack.Sequence
}

// webhook stores a raw webhook as ingest does.
func (w *world) webhook(modality, jobID string) uint64 {
	return w.publish(contract.Default.WebhookSubject(modality), jobID, fmt.Sprintf(`{"job_id":%q,"status":"completed"}`, jobID),
		contract.HeaderReceivedAt, time.Now().UTC().Format(time.RFC3339Nano), contract.HeaderModality, modality,
		contract.HeaderRemoteAddr, "203.0.113.7:4711")
}

// streamMsgs reads every message of stream (optionally only those on subjects) in order.
func (w *world) streamMsgs(stream string, subjects ...string) []*jetstream.RawStreamMsg {
	w.tb.Helper()
	var out []*jetstream.RawStreamMsg
	for _, m := range natstest.StreamMsgs(w.tb, w.js, stream) {
		if len(subjects) == 0 || slices.Contains(subjects, m.Subject) {
			out = append(out, m)
		}
	}
	return out
}

// withSimulator starts the simulator and a client of it.
func (w *world) withSimulator(cfg simulator.Config) {
	w.tb.Helper()
	w.StartSimulator(cfg)
	w.sim, w.api = w.Sim, w.API
}

// startVerifier runs the real verifier until the test ends.
func (w *world) startVerifier(maxAttempts int) {
	w.tb.Helper()
	v, err := verify.New(verify.Config{
		JS: w.js, API: w.api, Deliverer: w.Deliverer, Log: w.log, Concurrency: 8, MaxAttempts: maxAttempts,
		RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
		UnknownRPM:     60_000, // these tests verify jobs submitted around the bridge
		UnknownLimiter: w.UnknownBudget(60_000, 0),
	})
	if err != nil {
		w.tb.Fatal(err)
	}
	testworld.Run(w.tb, "verifier", v.Run)
}

// verifierIdle waits until the verify consumer has nothing pending or unacknowledged.
func (w *world) verifierIdle(total uint64) {
	w.tb.Helper()
	natstest.WaitFor(w.tb, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := w.js.Consumer(ctx, contract.Default.StreamWebhooks, contract.Default.ConsumerVerify)
		if err != nil {
			return err
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if ci.AckFloor.Stream < total || ci.NumPending > 0 || ci.NumAckPending > 0 {
			return fmt.Errorf("verify consumer: ack floor %d of %d, pending %d, ack pending %d", ci.AckFloor.Stream, total, ci.NumPending, ci.NumAckPending)
		}
		return nil
	})
}

// resultsPerJob counts primary results per job id (Nats-Msg-Id).
func (w *world) resultsPerJob() map[string]int {
	out := map[string]int{}
	for _, m := range w.streamMsgs(contract.Default.StreamResults) {
		out[m.Header.Get(jetstream.MsgIDHeader)]++
	}
	return out
}

// submit creates a job at the simulator directly (not through the bridge: no JOBS record).
func (w *world) submit(modality string) string {
	w.tb.Helper()
	field := map[string]string{"prompt": "prompt", "image": "image_url", "video": "video_url"}[modality]
	val := "hello"
	if field != "prompt" {
		val = "https://example.com/x.png"
	}
	sub, err := w.api.Submit(natstest.CtxWithin(w.tb, 10*time.Second), modality, map[string]string{field: val}, "")
	if err != nil {
		w.tb.Fatalf("submit: %v", err)
	}
	return sub.JobID
}

// waitTerminal waits until the simulator finished a job.
func (w *world) waitTerminal(id string) {
	w.tb.Helper()
	natstest.WaitFor(w.tb, 10*time.Second, func() error {
		j, ok := w.sim.Job(id)
		if !ok {
			return fmt.Errorf("unknown job %s", id)
		}
		if j.Status != "completed" && j.Status != "failed" {
			return fmt.Errorf("job %s is %s", id, j.Status)
		}
		return nil
	})
}
