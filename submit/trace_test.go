package submit

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestSubmissionKeepsTraceContext: a submit request's traceparent reaches the job's JOBS record: as sent
// without a TracerProvider, else as the submission's span, its child, whose child is the upstream call.
func TestSubmissionKeepsTraceContext(t *testing.T) {
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	const parent = "00-" + traceID + "-" + spanID + "-01"
	tests := []struct {
		name   string
		traced bool
	}{
		{"without a tracer provider", false},
		{"with one", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testworld.Single, simulator.Config{})
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			t.Cleanup(func() { _ = tp.Shutdown(natstest.Ctx(t)) })
			e.startSubmitter(func(c *Config) {
				if tt.traced {
					c.TracerProvider = tp
					c.API = e.Client(func(u *upstream.Config) { u.TracerProvider = tp })
				}
			})
			reply := e.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"hello"}`),
				map[string]string{contract.HeaderTraceParent: parent, contract.HeaderTraceState: "rojo=1"})
			var r Reply
			if err := json.Unmarshal(reply.Data, &r); err != nil || r.JobID == "" {
				t.Fatalf("reply %s: %v", reply.Data, err)
			}
			got := e.Record(r.JobID).Trace()
			if !tt.traced {
				if got != (contract.Trace{Parent: parent, State: "rojo=1"}) {
					t.Fatalf("record's trace %+v, want the request's", got)
				}
				return
			}
			var submit, call sdktrace.ReadOnlySpan
			// The submission's span ends once the reply is sent.
			natstest.WaitFor(t, 5*time.Second, func() error {
				for _, s := range rec.Ended() {
					switch s.Name() {
					case SpanName:
						submit = s
					case "POST /moderate/prompt":
						call = s
					}
				}
				if submit == nil || call == nil {
					return fmt.Errorf("%d spans: no submit span, or no upstream call", len(rec.Ended()))
				}
				return nil
			})
			switch {
			case submit.SpanContext().TraceID().String() != traceID || submit.Parent().SpanID().String() != spanID:
				t.Errorf("submit span %v, parent %v: want the child of %s", submit.SpanContext(), submit.Parent(), parent)
			case call.Parent().SpanID() != submit.SpanContext().SpanID():
				t.Errorf("upstream call's parent %v, want the submit span", call.Parent().SpanID())
			}
			want := "00-" + traceID + "-" + submit.SpanContext().SpanID().String() + "-01"
			if got != (contract.Trace{Parent: want, State: "rojo=1"}) {
				t.Errorf("record's trace %+v, want the submit span %s", got, want)
			}
		})
	}
}
