package verify

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/contract"
)

// tracerName names the verifier's tracer, as OpenTelemetry asks: the instrumenting package.
const tracerName = "github.com/evershield/bridge/verify"

// SpanName is the name of a verification span.
const SpanName = "verify"

// Attributes of a verification span.
const (
	attrJobID   = "bridge.job_id"
	attrLane    = "bridge.lane"
	attrAttempt = "bridge.attempt"
	attrSource  = "bridge.source"
	attrOutcome = "bridge.outcome"
)

// startSpan starts the verification span of d, whose job's record h holds (rev 0: none). Its parent is
// the job's trace: the record's trace context (a job submitted with one) is the job's, and the webhook's
// (its traceparent header: the sender's, or the server span ingest made for it) is the parent only when
// it is of the same trace (an upstream that passed the submission's trace on) or the record has none;
// a webhook of another trace is a link. Without either the span is a root. With a no-op TracerProvider
// the span is the parent's context itself, so the result still carries it.
func (v *Verifier) startSpan(ctx context.Context, d delivery, h held) (context.Context, trace.Span) {
	parent := contract.TraceFromHeader(ctx, d.msg.Headers())
	if v.untraced && parent == ctx && h.rec.TraceParent == "" {
		return ctx, trace.SpanFromContext(ctx) // no span, no trace: nothing to carry, nothing allocated
	}
	var opts []trace.SpanStartOption
	if h.rev != 0 {
		rctx := h.rec.Trace().Context(ctx)
		rec, hook := trace.SpanContextFromContext(rctx), trace.SpanContextFromContext(parent)
		if rec.IsValid() && (!hook.IsValid() || hook.TraceID() != rec.TraceID()) {
			parent = rctx
			if hook.IsValid() {
				opts = append(opts, trace.WithLinks(trace.Link{SpanContext: hook}))
			}
		}
	}
	ctx, span := v.tracer.Start(parent, SpanName, append(opts, trace.WithSpanKind(trace.SpanKindConsumer))...)
	if span.IsRecording() {
		span.SetAttributes(attribute.String(attrJobID, d.id), attribute.String(attrLane, d.lane.name),
			attribute.Int(attrAttempt, d.attempt), attribute.String("messaging.destination.name", d.msg.Subject()))
	}
	return ctx, span
}

// endSpan ends a verification span with its verdict: the outcome, and an error status for a retry or a
// dead letter, with its cause.
func endSpan(span trace.Span, vd verdict) {
	if span.IsRecording() {
		span.SetAttributes(attribute.String(attrOutcome, vd.outcome.String()))
		if (vd.action == actRetry || vd.action == actDeadLetter) && vd.cause != nil {
			span.SetStatus(codes.Error, vd.cause.Error())
		}
	}
	span.End()
}
