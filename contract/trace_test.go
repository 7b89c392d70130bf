package contract

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
)

const (
	testParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	testState  = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
)

// TestTraceHeadersAreW3Cs: the header names of names.go are the ones the propagator reads and writes.
func TestTraceHeadersAreW3Cs(t *testing.T) {
	if got, want := TraceContext.Fields(), []string{HeaderTraceParent, HeaderTraceState}; !slices.Equal(got, want) {
		t.Fatalf("propagator fields %v, contract names %v", got, want)
	}
}

// TestTraceRoundTrips: a traceparent and tracestate travel from NATS headers through a context into a
// record's Trace and back onto headers unchanged; no trace, a bad one or an oversized tracestate do not.
func TestTraceRoundTrips(t *testing.T) {
	tests := []struct {
		name       string
		in         nats.Header
		wantParent string
		wantState  string
	}{
		{"parent and state", nats.Header{HeaderTraceParent: {testParent}, HeaderTraceState: {testState}}, testParent, testState},
		{"parent alone", nats.Header{HeaderTraceParent: {testParent}}, testParent, ""},
		{"none", nats.Header{"Bridge-Source": {"webhook"}}, "", ""},
		{"not W3C", nats.Header{HeaderTraceParent: {"00-xyz-01"}}, "", ""},
		{"capitalised is another header", nats.Header{"Traceparent": {testParent}}, "", ""},
		{"state too long", nats.Header{HeaderTraceParent: {testParent}, HeaderTraceState: {"a=" + strings.Repeat("b", MaxTraceState)}}, testParent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := TraceFromHeader(context.Background(), tt.in)
			if valid := trace.SpanContextFromContext(ctx).IsValid(); valid != (tt.wantParent != "") {
				t.Fatalf("span context valid = %v", valid)
			}
			tr := TraceOf(ctx)
			if tr.Parent != tt.wantParent || tr.State != tt.wantState {
				t.Fatalf("TraceOf = %+v, want %q, %q", tr, tt.wantParent, tt.wantState)
			}
			out := nats.Header{}
			SetTraceHeader(tr.Context(context.Background()), out)
			if out.Get(HeaderTraceParent) != tt.wantParent || out.Get(HeaderTraceState) != tt.wantState {
				t.Fatalf("headers %v, want %q, %q", out, tt.wantParent, tt.wantState)
			}
			if tt.wantParent == "" && len(out) != 0 {
				t.Fatalf("headers %v set without a trace", out)
			}
		})
	}
}
