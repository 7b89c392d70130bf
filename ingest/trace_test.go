package ingest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

// TestWebhookKeepsTraceContext: a webhook's W3C traceparent and tracestate are stored with it, or, with
// an OpenTelemetry handler in front, the span that handler started for the request; a webhook without
// one (or with one that is not W3C) is stored without.
func TestWebhookKeepsTraceContext(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	createWebhooks(t, js, 1)
	h, err := New(Config{Publisher: js, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	handlerSpan := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0x4b, 0xf9, 1},
		SpanID: trace.SpanID{0xab, 2}, TraceFlags: trace.FlagsSampled})
	tests := []struct {
		name       string
		header     map[string]string
		span       trace.SpanContext // in the request's context, as otelhttp puts it
		wantParent string
		wantState  string
	}{
		{"traceparent and tracestate", map[string]string{"traceparent": parent, "tracestate": "rojo=00f067aa0ba902b7"}, trace.SpanContext{}, parent, "rojo=00f067aa0ba902b7"},
		{"none", nil, trace.SpanContext{}, "", ""},
		{"not W3C", map[string]string{"traceparent": "00-zz-01"}, trace.SpanContext{}, "", ""},
		{"a handler's span wins", map[string]string{"traceparent": parent}, handlerSpan, "00-" + handlerSpan.TraceID().String() + "-" + handlerSpan.SpanID().String() + "-01", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := uuid.NewString()
			ctx := natstest.Ctx(t)
			if tt.span.IsValid() {
				ctx = trace.ContextWithSpanContext(ctx, tt.span)
			}
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, PathWebhook+"/prompt", strings.NewReader(webhookBody(id)))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			msgs := stored(t, js)
			m := msgs[len(msgs)-1]
			if m.Header.Get("Nats-Msg-Id") != id {
				t.Fatalf("last stored is %s, want %s", m.Header.Get("Nats-Msg-Id"), id)
			}
			if got := [2]string{m.Header.Get(contract.HeaderTraceParent), m.Header.Get(contract.HeaderTraceState)}; got != [2]string{tt.wantParent, tt.wantState} {
				t.Errorf("stored trace %q, want %q, %q", got, tt.wantParent, tt.wantState)
			}
		})
	}
}

// TestNoTraceCostsNothing: reading the trace context of a webhook that has none allocates nothing.
func TestNoTraceCostsNothing(t *testing.T) {
	req := httptest.NewRequest(http.MethodPost, PathWebhook, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	if n := testing.AllocsPerRun(100, func() { _ = traceOf(req) }); n != 0 {
		t.Errorf("traceOf without a trace: %v allocations, want 0", n)
	}
}
