package verify

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestVerificationSpanContinuesTheTrace: the verification span is the child of the webhook's traceparent,
// else of the job record's; its GET /job/{id} is its child, and the result on RESULTS carries its trace.
func TestVerificationSpanContinuesTheTrace(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(natstest.Ctx(t)) })
	e.startVerifier(func(c *Config) {
		c.TracerProvider = tp
		c.API = e.Client(func(u *upstream.Config) { u.TracerProvider = tp })
	})
	const (
		hookTrace, hookSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		recTrace, recSpan   = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
		sameTraceSpan       = "1111111111111111"
	)
	tests := []struct {
		name                  string
		webhook, record       string // traceparents
		traceID, parentSpanID string
		link                  string // the span id the verification links to, if any
	}{
		{"from the webhook", "00-" + hookTrace + "-" + hookSpan + "-01", "", hookTrace, hookSpan, ""},
		{"from the record", "", "00-" + recTrace + "-" + recSpan + "-01", recTrace, recSpan, ""},
		{"the webhook's in the record's trace", "00-" + recTrace + "-" + sameTraceSpan + "-01", "00-" + recTrace + "-" + recSpan + "-01",
			recTrace, sameTraceSpan, ""},
		{"the record's, the webhook's of another trace linked", "00-" + hookTrace + "-" + hookSpan + "-01", "00-" + recTrace + "-" + recSpan + "-01",
			recTrace, recSpan, hookSpan},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.Reset()
			id := e.SubmitDirect("prompt", map[string]string{"prompt": "hello"})
			msg := testworld.WebhookMsg("prompt", id, testworld.WebhookBody(id, false), "203.0.113.7:4711")
			msg.Header.Set(contract.HeaderAuthenticated, contract.AuthenticatedToken)
			if tt.webhook != "" {
				msg.Header.Set(contract.HeaderTraceParent, tt.webhook)
			}
			if tt.record != "" {
				now := time.Now().UTC()
				if _, err := e.Store.Create(natstest.Ctx(t), jobs.Record{JobID: id, Modality: "prompt", State: jobs.StatePending,
					Origin: jobs.OriginSubmit, SubmittedAt: now, Deadline: now.Add(5 * time.Minute), TraceParent: tt.record}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := e.JS.PublishMsg(natstest.Ctx(t), msg); err != nil {
				t.Fatal(err)
			}
			e.WaitState(id, jobs.StateDelivered, 15*time.Second)
			res := findResult(t, e, id)
			verifySpan, call := spansOf(t, rec, tt.traceID)
			if verifySpan.Parent().SpanID().String() != tt.parentSpanID || !verifySpan.Parent().IsRemote() {
				t.Errorf("verification span's parent %v, want the remote span %s", verifySpan.Parent(), tt.parentSpanID)
			}
			if links := verifySpan.Links(); tt.link == "" && len(links) != 0 ||
				tt.link != "" && (len(links) != 1 || links[0].SpanContext.SpanID().String() != tt.link) {
				t.Errorf("verification span's links %v, want %q", links, tt.link)
			}
			if call.Parent().SpanID() != verifySpan.SpanContext().SpanID() {
				t.Errorf("GET /job/{id}'s parent %v, want the verification span %v", call.Parent().SpanID(), verifySpan.SpanContext().SpanID())
			}
			got := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(natstest.Ctx(t), propagation.MapCarrier{
				contract.HeaderTraceParent: res.Get(contract.HeaderTraceParent)}))
			if got.TraceID().String() != tt.traceID || got.SpanID() != verifySpan.SpanContext().SpanID() {
				t.Errorf("result's traceparent %q, want trace %s and the verification span %v", res.Get(contract.HeaderTraceParent),
					tt.traceID, verifySpan.SpanContext().SpanID())
			}
		})
	}
}

// findResult is the headers of job id's result on RESULTS.
func findResult(t *testing.T, e *env, id string) nats.Header {
	t.Helper()
	for _, m := range e.WaitResults(contract.Default.SubjectResults+">", 1, 10*time.Second) {
		if m.Header.Get(jetstream.MsgIDHeader) == id {
			return m.Header
		}
	}
	t.Fatalf("no result of %s", id)
	return nil
}

// spansOf waits for the verification span of the trace traceID and its GET /job/{id} span.
func spansOf(t *testing.T, rec *tracetest.SpanRecorder, traceID string) (verifySpan, call sdktrace.ReadOnlySpan) {
	t.Helper()
	natstest.WaitFor(t, 10*time.Second, func() error {
		verifySpan, call = nil, nil
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() != traceID {
				continue
			}
			switch s.Name() {
			case SpanName:
				verifySpan = s
			case "GET /job/{id}":
				call = s
			}
		}
		if verifySpan == nil || call == nil {
			return fmt.Errorf("trace %s: verification span %v, GET /job/{id} span %v", traceID, verifySpan != nil, call != nil)
		}
		return nil
	})
	return verifySpan, call
}

// TestNoTraceCostsNothing: without a TracerProvider, a delivery whose webhook and record carry no trace
// context gets no span, and allocates nothing for it.
func TestNoTraceCostsNothing(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	id := uuid.NewString()
	e.PublishWebhook("prompt", id, testworld.WebhookBody(id, false))
	c, err := e.JS.OrderedConsumer(natstest.Ctx(t), contract.Default.StreamWebhooks, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(Config{JS: e.JS, API: e.API, Deliverer: e.Deliverer, UnknownRPM: UnknownOff})
	if err != nil {
		t.Fatal(err)
	}
	d := delivery{msg: m, lane: &lane{name: "main"}, id: id}
	ctx := natstest.Ctx(t)
	if n := testing.AllocsPerRun(100, func() {
		sctx, span := v.startSpan(ctx, d, held{})
		if sctx != ctx {
			t.Fatal("a span without a trace or a provider")
		}
		endSpan(span, verdict{})
	}); n != 0 {
		t.Errorf("untraced verification: %v allocations, want 0", n)
	}
}
