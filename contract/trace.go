package contract

import (
	"context"
	"maps"
	"slices"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TraceContext is the one propagator of the bridge: W3C Trace Context, whose fields are
// [HeaderTraceParent] and [HeaderTraceState]. The bridge takes no other (no baggage, no B3).
var TraceContext propagation.TextMapPropagator = propagation.TraceContext{}

// MaxTraceState bounds the tracestate the bridge keeps: W3C asks every hop to pass on at least 512
// characters; a longer one is dropped (the traceparent is kept), so that a sender cannot make every
// stored webhook and JOBS record carry kilobytes.
const MaxTraceState = 512

// headerCarrier adapts a nats.Header, whose keys are case-sensitive, to a propagation carrier.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string { return nats.Header(c).Get(key) }
func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }
func (c headerCarrier) Keys() []string        { return slices.Collect(maps.Keys(c)) }

// TraceFromHeader returns ctx with the span context of h's traceparent and tracestate as its remote
// parent, or ctx itself when h has no valid traceparent (one map look-up: the common case costs nothing).
func TraceFromHeader(ctx context.Context, h nats.Header) context.Context {
	if h.Get(HeaderTraceParent) == "" {
		return ctx
	}
	return TraceContext.Extract(ctx, headerCarrier(h))
}

// SetTraceHeader sets on h the traceparent and tracestate of ctx's span context ([TraceOf]); nothing when
// ctx has none.
func SetTraceHeader(ctx context.Context, h nats.Header) {
	t := TraceOf(ctx)
	if t.Parent == "" {
		return
	}
	h.Set(HeaderTraceParent, t.Parent)
	if t.State != "" {
		h.Set(HeaderTraceState, t.State)
	}
}

// Trace is a span context as W3C Trace Context spells it: what a JOBS record and a stored webhook keep.
// The zero Trace is no trace.
type Trace struct {
	// Parent is the traceparent, e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.
	Parent string
	// State is the tracestate; "" for none.
	State string
}

// TraceOf is ctx's span context as W3C strings, the zero Trace when ctx has none. A tracestate longer
// than [MaxTraceState] is dropped.
func TraceOf(ctx context.Context) Trace {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return Trace{}
	}
	c := propagation.MapCarrier{}
	TraceContext.Inject(ctx, c)
	t := Trace{Parent: c[HeaderTraceParent], State: c[HeaderTraceState]}
	if len(t.State) > MaxTraceState {
		t.State = ""
	}
	return t
}

// Context returns ctx with t as its remote parent span context, or ctx itself when t is zero or not a
// valid traceparent.
func (t Trace) Context(ctx context.Context) context.Context {
	if t.Parent == "" {
		return ctx
	}
	return TraceContext.Extract(ctx, propagation.MapCarrier{HeaderTraceParent: t.Parent, HeaderTraceState: t.State})
}
