package jobs_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// recordTrace and ctxTrace are two traces of the tests below: the one a job's record keeps, and the one
// of a verification in progress.
var (
	recordTrace = contract.Trace{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "rojo=00f067aa0ba902b7"}
	ctxTrace    = trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6},
		TraceFlags: trace.FlagsSampled})
)

// TestResultCarriesTraceContext: a result carries the trace context of the ctx that delivers it (a
// verification's span), else its record's (a poll, a timeout), else none; a record the deliverer creates
// for a webhook's job keeps its ctx's.
func TestResultCarriesTraceContext(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	withSpan := trace.ContextWithSpanContext(ctx, ctxTrace)
	spanParent := "00-" + ctxTrace.TraceID().String() + "-" + ctxTrace.SpanID().String() + "-01"
	tests := []struct {
		name      string
		record    contract.Trace
		ctx       context.Context
		timeout   bool
		wantTrace contract.Trace
	}{
		{"the record's, for a poll", recordTrace, ctx, false, recordTrace},
		{"the record's, for a timeout", recordTrace, ctx, true, recordTrace},
		{"the verification's over the record's", recordTrace, withSpan, false, contract.Trace{Parent: spanParent}},
		{"none", contract.Trace{}, ctx, false, contract.Trace{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := w.overdueJob(t, ctx, "prompt")
			if _, err := w.Store.Update(ctx, j.JobID, func(r *jobs.Record) (bool, error) {
				r.SetTrace(tt.record)
				return true, nil
			}); err != nil {
				t.Fatal(err)
			}
			var err error
			if tt.timeout {
				_, err = w.Deliverer.TimeOut(tt.ctx, j.JobID, nil)
			} else {
				_, err = w.Deliverer.Deliver(tt.ctx, j, contract.SourcePoll, time.Now())
			}
			if err != nil {
				t.Fatal(err)
			}
			msgs := w.msgsByID(t, j.JobID)
			if len(msgs) != 1 {
				t.Fatalf("%d results, want 1", len(msgs))
			}
			got := contract.Trace{Parent: msgs[0].Header.Get(contract.HeaderTraceParent), State: msgs[0].Header.Get(contract.HeaderTraceState)}
			if got != tt.wantTrace {
				t.Errorf("result's trace %+v, want %+v", got, tt.wantTrace)
			}
		})
	}
	t.Run("a webhook's job gets its verification's", func(t *testing.T) {
		id := uuid.NewString()
		raw, _ := json.Marshal(map[string]any{"job_id": id, "type": "image", "status": "completed"})
		rec, _, err := w.Deliverer.Ensure(withSpan, upstream.Job{JobID: id, Type: "image", Status: upstream.StatusCompleted, Raw: raw})
		if err != nil {
			t.Fatal(err)
		}
		if rec.Trace() != (contract.Trace{Parent: spanParent}) {
			t.Errorf("record's trace %+v, want %s", rec.Trace(), spanParent)
		}
	})
}
