package upstream

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/contract"
)

// traced is hc with its transport wrapped in otelhttp's, for Config.TracerProvider: each exchange made
// inside a span (a verification, a submission) is a client span, its child, named by its endpoint ("GET
// /job/{id}"), and carries the W3C traceparent to the upstream. An exchange outside any span (the
// reconciler's sweeps, a batch's export, the budget's and the fidelity check's calls) is not traced:
// each would be a trace of one span. No metrics are made (the bridge's are Prometheus'), and the span
// records the URL, never the Authorization header. hc itself is not changed.
func traced(hc *http.Client, tp trace.TracerProvider) *http.Client {
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c := *hc
	c.Transport = otelhttp.NewTransport(base, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(contract.TraceContext),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), otelhttp.WithSpanNameFormatter(spanName),
		otelhttp.WithFilter(inSpan))
	return &c
}

// inSpan reports whether r is made inside a span: only such an exchange is traced.
func inSpan(r *http.Request) bool { return trace.SpanContextFromContext(r.Context()).IsValid() }

// endpointKey is the context key of the endpoint an exchange is for ([request].ep), which names its span.
type endpointKey struct{}

// spanName names an exchange's span by its endpoint, e.g. "GET /job/{id}": a name without the job id,
// as OpenTelemetry asks of span names.
func spanName(_ string, r *http.Request) string {
	if ep, ok := r.Context().Value(endpointKey{}).(string); ok {
		return ep
	}
	return r.Method
}

// withEndpoint is ctx naming the endpoint of its exchange, when the client traces.
func (c *Client) withEndpoint(ctx context.Context, ep string) context.Context {
	if c.cfg.TracerProvider == nil {
		return ctx
	}
	return context.WithValue(ctx, endpointKey{}, ep)
}
