package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/submit"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
	"github.com/evershield/bridge/verify"
)

// traced is an App of every role on the simulator, tracing into an in-memory recorder, with a webhook
// token; its public URL is its own listener, so the simulator's webhooks come to it.
type traced struct {
	a   *App
	cfg Config
	sim *simulator.Simulator
	rec *tracetest.SpanRecorder // nil: the App does not trace
	nc  *nats.Conn
	js  jetstream.JetStream
}

func startTraced(t *testing.T, tracing bool) *traced {
	t.Helper()
	tr := &traced{sim: simtest.Run(t, simulator.Config{})}
	tr.cfg = testConfig(t)
	tr.cfg.APIURL, tr.cfg.WebhookToken = tr.sim.URL(), testworld.Token
	var opts []Option
	if tracing {
		tr.rec = tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tr.rec))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		opts = append(opts, WithTracerProvider(tp))
	}
	tr.a = startApp(t, tr.cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		append(opts, WithPublicURLFromListener())...)
	waitReady(t, "http://"+tr.a.Addr().String())
	tr.nc, tr.js = natstest.Connect(t, tr.cfg.NATSURL)
	return tr
}

// postWebhook sends the webhook of job id with traceparent, as the upstream would with the token.
func (tr *traced) postWebhook(t *testing.T, id, traceparent string) {
	t.Helper()
	req, err := http.NewRequestWithContext(natstest.Ctx(t), http.MethodPost,
		"http://"+tr.a.Addr().String()+"/webhook/prompt?token="+testworld.Token, strings.NewReader(string(testworld.WebhookBody(id, false))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", traceparent)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook: %d %s", resp.StatusCode, b)
	}
}

// stored waits for job id's message in stream (its Nats-Msg-Id is the job's) and returns its headers.
func (tr *traced) stored(t *testing.T, stream, id string) nats.Header {
	t.Helper()
	var h nats.Header
	natstest.WaitFor(t, 20*time.Second, func() error {
		for _, m := range natstest.StreamMsgs(t, tr.js, stream) {
			if m.Header.Get(jetstream.MsgIDHeader) == id {
				h = m.Header
				return nil
			}
		}
		return fmt.Errorf("no message of %s in %s", id, stream)
	})
	return h
}

// span waits for the ended span called name in the trace traceID.
func (tr *traced) span(t *testing.T, traceID, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	natstest.WaitFor(t, 10*time.Second, func() error {
		for _, s := range tr.rec.Ended() {
			if s.Name() == name && s.SpanContext().TraceID().String() == traceID {
				found = s
				return nil
			}
		}
		return fmt.Errorf("no span %q in trace %s", name, traceID)
	})
	return found
}

// childOf fails unless span's parent is the span spanID (hex), of the same trace.
func childOf(t *testing.T, span sdktrace.ReadOnlySpan, spanID string) {
	t.Helper()
	if span.Parent().SpanID().String() != spanID || span.Parent().TraceID() != span.SpanContext().TraceID() {
		t.Errorf("span %q: parent %s/%s, want %s of trace %s", span.Name(), span.Parent().TraceID(), span.Parent().SpanID(),
			spanID, span.SpanContext().TraceID())
	}
}

// traceparentOf is the trace id and span id of a traceparent header.
func traceparentOf(t *testing.T, h nats.Header) (traceID, spanID string) {
	t.Helper()
	parts := strings.Split(h.Get(contract.HeaderTraceParent), "-")
	if len(parts) != 4 {
		t.Fatalf("traceparent %q", h.Get(contract.HeaderTraceParent))
	}
	return parts[1], parts[2]
}

// TestTraceFromWebhookToResult sends a webhook with a W3C traceparent in, and finds its trace on the
// result: the webhook's server span is the child of the sender's span, the verification span the child
// of the webhook's, the GET /job/{id} the child of the verification, and the result on RESULTS carries
// the verification span. And a submission's traceparent (NATS headers) reaches the job's JOBS record
// and, through the simulator's webhook, which carries none, its result.
func TestTraceFromWebhookToResult(t *testing.T) {
	tr := startTraced(t, true)
	t.Run("webhook", func(t *testing.T) {
		const traceID, senderSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		api := simtest.Client(t, tr.sim)
		sub, err := api.Submit(natstest.Ctx(t), "prompt", map[string]string{"prompt": "traced"}, "")
		if err != nil {
			t.Fatal(err)
		}
		natstest.WaitFor(t, 10*time.Second, func() error {
			if j, ok := tr.sim.Job(sub.JobID); !ok || j.Status != upstream.StatusCompleted {
				return fmt.Errorf("job %s not completed", sub.JobID)
			}
			return nil
		})
		tr.postWebhook(t, sub.JobID, "00-"+traceID+"-"+senderSpan+"-01")

		result := tr.stored(t, contract.Default.StreamResults, sub.JobID)
		gotTrace, gotSpan := traceparentOf(t, result)
		if gotTrace != traceID {
			t.Fatalf("result's trace %s, want the webhook's %s", gotTrace, traceID)
		}
		server := tr.span(t, traceID, webhookSpan)
		childOf(t, server, senderSpan)
		if !server.Parent().IsRemote() {
			t.Errorf("webhook span's parent is not the sender's remote span")
		}
		if _, span := traceparentOf(t, tr.stored(t, contract.Default.StreamWebhooks, sub.JobID)); span != server.SpanContext().SpanID().String() {
			t.Errorf("stored webhook's span %s, want the webhook's server span %s", span, server.SpanContext().SpanID())
		}
		v := tr.span(t, traceID, verify.SpanName)
		childOf(t, v, server.SpanContext().SpanID().String())
		childOf(t, tr.span(t, traceID, "GET /job/{id}"), v.SpanContext().SpanID().String())
		if gotSpan != v.SpanContext().SpanID().String() {
			t.Errorf("result's span %s, want the verification span %s", gotSpan, v.SpanContext().SpanID())
		}
	})
	t.Run("submission", func(t *testing.T) {
		const traceID, senderSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
		id := tr.submit(t, "00-"+traceID+"-"+senderSpan+"-01")
		s := tr.span(t, traceID, submit.SpanName)
		childOf(t, s, senderSpan)
		childOf(t, tr.span(t, traceID, "POST /moderate/prompt"), s.SpanContext().SpanID().String())
		rec := tr.record(t, id)
		if want := "00-" + traceID + "-" + s.SpanContext().SpanID().String() + "-01"; rec.TraceParent != want {
			t.Errorf("record's trace_parent %q, want the submission's span %s", rec.TraceParent, want)
		}
		result := tr.stored(t, contract.Default.StreamResults, id)
		if gotTrace, _ := traceparentOf(t, result); gotTrace != traceID {
			t.Fatalf("result's trace %s, want the submission's %s", gotTrace, traceID)
		}
		if result.Get(contract.HeaderBridgeSource) == contract.SourceWebhook {
			// The simulator's webhook carries no traceparent: the verification continues the record's.
			childOf(t, tr.span(t, traceID, verify.SpanName), s.SpanContext().SpanID().String())
		}
	})
}

// submit sends a prompt submission with traceparent in its NATS headers and returns its job id.
func (tr *traced) submit(t *testing.T, traceparent string) string {
	t.Helper()
	m := nats.NewMsg(contract.Default.SubjectSubmit + "prompt")
	m.Data = []byte(`{"prompt":"traced submission"}`)
	m.Header.Set(contract.HeaderTraceParent, traceparent)
	reply, err := tr.nc.RequestMsg(m, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r submit.Reply
	if err := json.Unmarshal(reply.Data, &r); err != nil || r.JobID == "" {
		t.Fatalf("submit reply %s %v: %v", reply.Data, reply.Header, err)
	}
	return r.JobID
}

// record reads job id's JOBS record.
func (tr *traced) record(t *testing.T, id string) jobs.Record {
	t.Helper()
	kv, err := tr.js.KeyValue(natstest.Ctx(t), contract.Default.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(natstest.Ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var rec jobs.Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestTraceContextWithoutTracing: without a TracerProvider the bridge makes no span, and a webhook's
// traceparent and tracestate reach its result as they came, as a submission's reach its record.
func TestTraceContextWithoutTracing(t *testing.T) {
	tr := startTraced(t, false)
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	id := tr.submit(t, parent)
	if rec := tr.record(t, id); rec.TraceParent != parent {
		t.Errorf("record's trace_parent %q, want the submission's %q", rec.TraceParent, parent)
	}
	if got := tr.stored(t, contract.Default.StreamResults, id).Get(contract.HeaderTraceParent); got != parent {
		t.Errorf("result's traceparent %q, want the submission's %q", got, parent)
	}
}

// TestTracingFromEnv: the OTEL_* variables turn tracing on or off, and name themselves when they ask
// for what the bridge does not do.
func TestTracingFromEnv(t *testing.T) {
	const ep = "http://127.0.0.1:4318"
	tests := []struct {
		name    string
		env     map[string]string
		wantOn  bool
		wantErr string
	}{
		{"nothing set: off", nil, false, ""},
		{"an endpoint: on", map[string]string{EnvOTelEndpoint: ep}, true, ""},
		{"a traces endpoint: on", map[string]string{EnvOTelTracesEndpoint: ep + "/v1/traces"}, true, ""},
		{"otlp: on, at the default endpoint", map[string]string{EnvOTelTracesExporter: "otlp"}, true, ""},
		{"none: off", map[string]string{EnvOTelTracesExporter: "none", EnvOTelEndpoint: ep}, false, ""},
		{"SDK disabled: off", map[string]string{EnvOTelSDKDisabled: "true", EnvOTelTracesExporter: "otlp"}, false, ""},
		{"http/json: on", map[string]string{EnvOTelEndpoint: ep, EnvOTelProtocol: "http/json"}, true, ""},
		{"grpc refused", map[string]string{EnvOTelEndpoint: ep, EnvOTelProtocol: "grpc"}, false, EnvOTelProtocol + `: "grpc" is not supported`},
		{"the traces protocol wins", map[string]string{EnvOTelEndpoint: ep, EnvOTelProtocol: "grpc", EnvOTelTracesProtocol: "http/protobuf"}, true, ""},
		{"another exporter refused", map[string]string{EnvOTelTracesExporter: "zipkin"}, false, EnvOTelTracesExporter + `: "zipkin" is not supported`},
		{"not a URL", map[string]string{EnvOTelEndpoint: "collector:4318"}, false, EnvOTelEndpoint + `: "collector:4318" is not an http or https URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := TracingFromEnv(natstest.Ctx(t), tt.env, "v1.2.3", zerolog.Nop())
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
			if tr.Enabled() != tt.wantOn {
				t.Fatalf("enabled %v, want %v", tr.Enabled(), tt.wantOn)
			}
			var o options
			if err := tr.Option()(&o); err != nil || (o.tracer != nil) != tt.wantOn {
				t.Fatalf("option: provider %v, %v", o.tracer, err)
			}
		})
	}
}

// TestTracingExportsAndFlushes: with OTEL_EXPORTER_OTLP_ENDPOINT set, the spans ended before Shutdown reach the
// collector over OTLP/HTTP by the time Shutdown returns, under the service name OTEL_SERVICE_NAME gives.
func TestTracingExportsAndFlushes(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if r.URL.Path == "/v1/traces" {
			bodies = append(bodies, b)
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(collector.Close)
	tracing, err := TracingFromEnv(natstest.Ctx(t), map[string]string{EnvOTelEndpoint: collector.URL, EnvOTelServiceName: "bridge-eu"},
		"v1.2.3", zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	_, span := tracing.sdk.Tracer("test").Start(context.Background(), "a span")
	span.End()
	if err := tracing.Shutdown(natstest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 || !strings.Contains(string(bodies[0]), "a span") || !strings.Contains(string(bodies[0]), "bridge-eu") {
		t.Fatalf("collector got %d exports (%q), want one with the span and the service name", len(bodies), bodies)
	}
}
