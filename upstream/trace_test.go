package upstream_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/upstream"
)

// TestCallsAreChildSpans: with a TracerProvider, GET /job/{id} is a client span named by its endpoint,
// the child of the caller's span, and the upstream receives that client span as its traceparent; outside
// a span, or without a provider, there is no span and no traceparent is sent.
func TestCallsAreChildSpans(t *testing.T) {
	var mu sync.Mutex
	var sent []string // the traceparent of each request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, r.Header.Get("traceparent"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"job_id":"`+strings.TrimPrefix(r.URL.Path, "/api/v1/job/")+`","status":"completed"}`)
	}))
	t.Cleanup(srv.Close)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(natstest.Ctx(t)) })
	traced, err := upstream.New(upstream.Config{BaseURL: srv.URL + "/api/v1", APIKey: "secret-key", Limiter: budget.Unlimited{},
		TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	ctx, parent := tp.Tracer("test").Start(natstest.Ctx(t), "verify")
	if _, err := traced.GetJob(ctx, "j1", upstream.ClassVerify); err != nil {
		t.Fatal(err)
	}
	parent.End()
	var call sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "GET /job/{id}" {
			call = s
		}
	}
	if call == nil {
		t.Fatalf("no span GET /job/{id} among %d", len(rec.Ended()))
	}
	if call.SpanKind() != trace.SpanKindClient || call.Parent().SpanID() != parent.SpanContext().SpanID() ||
		call.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("span %s kind %v parent %v, want a client span, child of %v", call.Name(), call.SpanKind(), call.Parent(), parent.SpanContext())
	}
	for _, a := range call.Attributes() {
		if strings.Contains(a.Value.Emit(), "secret-key") {
			t.Errorf("span attribute %s carries the API key", a.Key)
		}
	}
	want := "00-" + call.SpanContext().TraceID().String() + "-" + call.SpanContext().SpanID().String() + "-01"

	plain, err := upstream.New(upstream.Config{BaseURL: srv.URL + "/api/v1", APIKey: "k", Limiter: budget.Unlimited{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.GetJob(ctx, "j2", upstream.ClassVerify); err != nil {
		t.Fatal(err)
	}
	spans := len(rec.Ended())
	if _, err := traced.GetJob(natstest.Ctx(t), "j3", upstream.ClassPoll); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Ended()); n != spans {
		t.Errorf("a call outside any span made %d spans", n-spans)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 3 || sent[0] != want || sent[1] != "" || sent[2] != "" {
		t.Errorf("traceparents sent %q, want %q then none", sent, want)
	}
}
