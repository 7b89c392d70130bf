package submit

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/contract"
)

// tracerName names the submit service's tracer, as OpenTelemetry asks: the instrumenting package.
const tracerName = "github.com/evershield/bridge/submit"

// SpanName is the name of a submission's span.
const SpanName = "submit"

// handleSubmitTraced serves moderate.<modality> in a span that is the child of the request's
// traceparent and tracestate headers (a root without them), so that the upstream call is its child and
// the job's record keeps its trace context. With a no-op TracerProvider the request's own trace context
// is what the record keeps.
func (s *Service) handleSubmitTraced(base context.Context, req micro.Request, modality, field string) {
	ctx := contract.TraceFromHeader(base, nats.Header(req.Headers()))
	ctx, span := s.tracer.Start(ctx, SpanName, trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(attribute.String("bridge.modality", modality), attribute.String("messaging.destination.name", req.Subject()))
	}
	s.handleSubmit(ctx, req, modality, field)
}
