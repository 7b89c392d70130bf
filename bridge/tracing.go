package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ingest"
)

// The standard OpenTelemetry variables [TracingFromEnv] reads itself. The OTLP exporter and the SDK
// read the rest of theirs (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _CERTIFICATE, _COMPRESSION,
// OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES, ...) from the process's environment, as the
// OpenTelemetry specification defines them.
const (
	EnvOTelSDKDisabled    = "OTEL_SDK_DISABLED"
	EnvOTelTracesExporter = "OTEL_TRACES_EXPORTER"
	EnvOTelEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvOTelTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvOTelProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvOTelTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	EnvOTelServiceName    = "OTEL_SERVICE_NAME"
)

// defaultTracingService is the service name of the bridge's spans without OTEL_SERVICE_NAME.
const defaultTracingService = "bridge"

// TracingShutdownTimeout bounds [Tracing.Shutdown] when its ctx has no deadline: the flush of the last
// spans to the collector.
const TracingShutdownTimeout = 5 * time.Second

// Tracing is the process's OpenTelemetry tracing, as the standard OTEL_* variables configure it
// ([TracingFromEnv]): off (the zero Tracing: no SDK, no exporter, no goroutine; the W3C trace context
// of webhooks and submissions still travels to their results), or an SDK TracerProvider that batches
// spans to an OTLP collector over HTTP. Give it to [New] with [Tracing.Option]; the caller shuts it
// down after [App.Run] returned.
type Tracing struct {
	sdk *sdktrace.TracerProvider // nil: off
}

// TracingFromEnv reads the OTEL_* variables of environ (nil is the empty environment) and starts tracing
// when they ask for it: OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT,
// with /v1/traces appended, or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is) without
// OTEL_TRACES_EXPORTER=none. OTEL_SDK_DISABLED=true turns it off whatever the others say; with none of
// them set it is off. OTLP goes over HTTP only (http/protobuf, or http/json): a protocol of grpc is a
// start-up error naming the variable, as is any other exporter. The service is OTEL_SERVICE_NAME,
// default "bridge", at version. When on, OpenTelemetry's errors (a collector that cannot be reached) are
// logged to log at warn level.
func TracingFromEnv(ctx context.Context, environ map[string]string, version string, log zerolog.Logger) (*Tracing, error) {
	endpoint, on, err := otlpEndpoint(environ)
	if err != nil || !on {
		return &Tracing{}, err
	}
	var opts []otlptracehttp.Option
	if endpoint != "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	name := environ[EnvOTelServiceName]
	if name == "" {
		name = defaultTracingService
	}
	// Later options win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over the bridge's defaults.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(name), semconv.ServiceVersion(version)), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tlog := log.With().Str("component", "tracing").Logger()
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { tlog.Warn().Err(err).Msg("opentelemetry") }))
	tlog.Info().Str("service", name).Str("endpoint", endpoint).Msg("tracing to an OTLP collector")
	return &Tracing{sdk: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))}, nil
}

// otlpEndpoint decides from environ whether tracing is on, and returns the traces endpoint URL the
// variables name ("" for the exporter's default, https://localhost:4318/v1/traces).
func otlpEndpoint(environ map[string]string) (endpoint string, on bool, _ error) {
	if strings.EqualFold(strings.TrimSpace(environ[EnvOTelSDKDisabled]), "true") {
		return "", false, nil
	}
	endpoint, err := tracesURL(environ)
	if err != nil {
		return "", false, err
	}
	switch exp := strings.TrimSpace(environ[EnvOTelTracesExporter]); exp {
	case "none":
		return "", false, nil
	case "otlp":
	case "":
		if endpoint == "" {
			return "", false, nil // nothing asks for tracing
		}
	default:
		return "", false, fmt.Errorf("%s: %q is not supported: otlp or none", EnvOTelTracesExporter, exp)
	}
	k, p := EnvOTelTracesProtocol, strings.TrimSpace(environ[EnvOTelTracesProtocol]) // it wins over the general one
	if p == "" {
		k, p = EnvOTelProtocol, strings.TrimSpace(environ[EnvOTelProtocol])
	}
	if p != "" && p != "http/protobuf" && p != "http/json" {
		return "", false, fmt.Errorf("%s: %q is not supported: the bridge sends OTLP over HTTP (http/protobuf or http/json, port 4318)", k, p)
	}
	return endpoint, true, nil
}

// tracesURL is the traces endpoint the variables name: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, else
// OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces appended, else "". A URL the exporter would ignore (not
// http or https, no host) is an error naming its variable.
func tracesURL(environ map[string]string) (string, error) {
	k, v := EnvOTelTracesEndpoint, strings.TrimSpace(environ[EnvOTelTracesEndpoint])
	if v == "" {
		k, v = EnvOTelEndpoint, strings.TrimSpace(environ[EnvOTelEndpoint])
		if v == "" {
			return "", nil
		}
		v = strings.TrimRight(v, "/") + "/v1/traces"
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%s: %q is not an http or https URL with a host", k, environ[k])
	}
	return v, nil
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t != nil && t.sdk != nil }

// Option is the [New] option of this tracing: [WithTracerProvider] of its provider, or, when tracing is
// off, an option that changes nothing.
func (t *Tracing) Option() Option {
	if !t.Enabled() {
		return func(*options) error { return nil }
	}
	return WithTracerProvider(t.sdk)
}

// Shutdown flushes the spans not yet exported and stops the exporter, within ctx's deadline or, without
// one, [TracingShutdownTimeout]; spans still unsent then are dropped. Call it once [App.Run] returned,
// when every span has ended. Off, it does nothing.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, TracingShutdownTimeout)
		defer cancel()
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flush: %w", err)
	}
	return nil
}

// webhookSpan names the server span of a webhook: one name for every modality, as span names should be
// few.
const webhookSpan = "POST " + ingest.PathWebhook

// traced wraps h in otelhttp's handler under [WithTracerProvider]: a webhook becomes a server span, the
// child of its W3C traceparent, which ingest then stores with it. With filter only the webhook paths are
// traced (not health, readiness or metrics). The span records the path, never the query (?token=). No
// metrics are made. Without a TracerProvider h is returned as it is, and ingest keeps the webhook's own
// traceparent.
func (a *App) traced(h http.Handler, filter bool) http.Handler {
	if a.tracer == nil {
		return h
	}
	opts := []otelhttp.Option{otelhttp.WithTracerProvider(a.tracer), otelhttp.WithPropagators(contract.TraceContext),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithSpanNameFormatter(func(string, *http.Request) string { return webhookSpan })}
	if filter {
		opts = append(opts, otelhttp.WithFilter(func(r *http.Request) bool { return isWebhookPath(r.URL.Path) }))
	}
	return otelhttp.NewHandler(h, webhookSpan, opts...)
}
