package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
)

// fakeBridge answers webhooks like ingest does, publishes a result for each first webhook of a job (as
// the verifier would), refuses every tenth request with 503, and counts upstream calls in /metrics.
type fakeBridge struct {
	js    jetstream.JetStream
	n     atomic.Int64
	calls atomic.Int64
}

func (f *fakeBridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/metrics" {
		fmt.Fprintf(w, "# TYPE bridge_upstream_calls_total counter\nbridge_upstream_calls_total{endpoint=\"job\",outcome=\"ok\"} %d\n"+
			"bridge_upstream_calls_total{endpoint=\"jobs\",outcome=\"ok\"} 1\nbridge_upstream_calls_total_other 99\n", f.calls.Load())
		return
	}
	if f.n.Add(1)%10 == 0 {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var body struct {
		JobID string `json:"job_id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	f.calls.Add(1)
	msg := &nats.Msg{Subject: contract.Default.ResultSubject("prompt"), Data: []byte(`{"job_id":"` + body.JobID + `"}`),
		Header: nats.Header{jetstream.MsgIDHeader: {body.JobID}}}
	if _, err := f.js.PublishMsg(r.Context(), msg); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func newFake(t *testing.T) (*fakeBridge, *httptest.Server, *nats.Conn) {
	t.Helper()
	w := testworld.New(t)
	f := &fakeBridge{js: w.JS}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv, w.NC
}

func TestRunCountsLatencyResultsAndErrors(t *testing.T) {
	_, srv, nc := newFake(t)
	jobs := make([]string, 150)
	for i := range jobs {
		jobs[i] = uuid.NewString()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Target: srv.URL, Concurrency: 8, Count: 200, Duplicates: 0.2, Jobs: jobs, NC: nc,
		Settle: 20 * time.Second, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 200 {
		t.Errorf("sent %d, want the count bound 200", rep.Sent)
	}
	if rep.Accepted+rep.Errors["http 503"] != rep.Sent || rep.Errors["http 503"] != 20 {
		t.Errorf("accepted %d, errors %v of %d sent; want every tenth refused with 503", rep.Accepted, rep.Errors, rep.Sent)
	}
	if len(rep.Latency) != rep.Accepted {
		t.Errorf("%d latencies for %d accepted", len(rep.Latency), rep.Accepted)
	}
	if rep.Expected == 0 || rep.Results != rep.Expected || len(rep.EndToEnd) != rep.Results {
		t.Errorf("results %d of %d owed, %d end-to-end samples", rep.Results, rep.Expected, len(rep.EndToEnd))
	}
	if rep.Expected >= rep.Accepted {
		t.Errorf("%d distinct jobs owed for %d accepted webhooks: duplicates were not sent", rep.Expected, rep.Accepted)
	}
	// Each accepted first webhook of a job counted one call; the fake's own "jobs" series stays at 1.
	if rep.UpstreamCalls < float64(rep.Expected) || rep.UpstreamCalls > float64(rep.Accepted) {
		t.Errorf("upstream calls %v, want between %d and %d", rep.UpstreamCalls, rep.Expected, rep.Accepted)
	}
	var out bytes.Buffer
	rep.Print(&out)
	for _, want := range []string{"accepted", "p99", "end to end", "per result", "http 503: 20"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunRateAndTimeBounds(t *testing.T) {
	_, srv, _ := newFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A fixed rate cannot start operation 49 before 49 periods have passed.
	rep, err := Run(ctx, Config{Target: srv.URL, Rate: 400, Concurrency: 4, Count: 50})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 50 || rep.Elapsed < 49*time.Second/400 {
		t.Errorf("rate 400/s: %d sent in %v; want 50 in at least %v", rep.Sent, rep.Elapsed, 49*time.Second/400)
	}
	if !strings.Contains(rep.Note, "not measured") || rep.Expected != 0 {
		t.Errorf("without jobs: note %q, %d owed; want no end-to-end figure", rep.Note, rep.Expected)
	}

	// The time bound ends a run whose count would take far longer.
	rep, err = Run(ctx, Config{Target: srv.URL, Rate: 100, Concurrency: 2, Count: 1_000_000, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// 100/s for 300 ms is 30 operations, due at 0, 10, ..., 290 ms; the one due at 300 ms may race the
	// bound. A few may miss it on a busy machine, never more than 31 go out.
	if rep.Sent < 25 || rep.Sent > 31 {
		t.Errorf("time bound: %d sent at 100/s for 300ms, want 30 (25 to 31)", rep.Sent)
	}
}

func TestRunSubmitNeedsNATSAndTargetsLoopbackOnly(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr error
	}{
		{"loopback ip", Config{Target: "http://127.0.0.1:1", Count: 1, Duration: time.Millisecond}, nil},
		{"localhost", Config{Target: "http://localhost:1", Count: 1, Duration: time.Millisecond}, nil},
		{"ipv6 loopback", Config{Target: "http://[::1]:1", Count: 1, Duration: time.Millisecond}, nil},
		{"remote host", Config{Target: "http://example.com"}, ErrInvalidConfig},
		{"private address", Config{Target: "http://10.0.0.1:8080"}, ErrInvalidConfig},
		{"no host", Config{Target: "/webhook"}, ErrInvalidConfig},
		{"submit without nats", Config{Target: "http://127.0.0.1:1", Submit: true}, ErrInvalidConfig},
		{"duplicates share", Config{Target: "http://127.0.0.1:1", Duplicates: 1}, ErrInvalidConfig},
		{"negative rate", Config{Target: "http://127.0.0.1:1", Rate: -1}, ErrInvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := Run(ctx, tt.cfg)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {.5, 6}, {.9, 10}, {1, 10}} {
		if got := Quantile(d, tt.q); got != tt.want {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if Quantile(nil, .5) != 0 {
		t.Error("empty")
	}
}

// TestRateTimesLatencyFromTheSchedule stalls the first request while the schedule runs on: the requests
// due during the stall are sent late, and each one's latency includes the wait since its slot (no
// coordinated omission). Only lower bounds are checked, which a slow machine cannot break.
func TestRateTimesLatencyFromTheSchedule(t *testing.T) {
	const (
		stall = 300 * time.Millisecond
		rate  = 1000 // one slot a millisecond: the 50 slots all fall in the first 49 ms of the stall
		count = 50
	)
	var first atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && first.CompareAndSwap(false, true) { // not the /metrics reads
			time.Sleep(stall) // the stall under test, not a synchronisation
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{Target: srv.URL, Rate: rate, Concurrency: 1, Count: count})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != count || !rep.FromSchedule {
		t.Fatalf("accepted %d of %d, from schedule %v", rep.Accepted, count, rep.FromSchedule)
	}
	// Request i (due at i ms) cannot be answered before the stall ends, at least 300 ms after the start.
	floor := stall - time.Duration(count-1)*time.Second/rate
	if got := rep.Latency[0]; got < floor {
		t.Errorf("shortest latency %v: requests due during a %v stall must count the wait (at least %v)", got, stall, floor)
	}
	var out bytes.Buffer
	rep.Print(&out)
	if !strings.Contains(out.String(), "slot in the schedule") {
		t.Errorf("report does not say latency is timed from the schedule:\n%s", out.String())
	}
}
