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

// startSpan starts the verification span of d, whose job's record h holds (rev 0: none): a child of the
// webhook's trace context (its traceparent header, which ingest took from the webhook's request), else
// of the record's (a job submitted with one, whose webhook carries none), else a root. With a no-op
// TracerProvider the span is the parent's context itself, so the result still carries it.
func (v *Verifier) startSpan(ctx context.Context, d delivery, h held) (context.Context, trace.Span) {
	parent := contract.TraceFromHeader(ctx, d.msg.Headers())
	if !trace.SpanContextFromContext(parent).IsValid() && h.rev != 0 {
		parent = h.rec.Trace().Context(ctx)
	}
	ctx, span := v.tracer.Start(parent, SpanName, trace.WithSpanKind(trace.SpanKindConsumer))
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
