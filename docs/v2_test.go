package docs_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// TestFilledTypeMatchesSchema publishes a result from a v2 upstream object without a type (the v2
// webhook body: no type, no categories, a delivery_id and nsfw) and checks the real message against
// result.v1.schema.json: type is the record's modality, and bridge.filled says the bridge put it there.
func TestFilledTypeMatchesSchema(t *testing.T) {
	sch := compileSchemas(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := testworld.New(t)
	js, store, d := w.JS, w.Store, w.Deliverer
	id := uuid.NewString()
	now := time.Now().UTC()
	if _, err := store.Create(ctx, jobs.Record{JobID: id, Modality: "audio", State: jobs.StatePending,
		Origin: jobs.OriginSubmit, SubmittedAt: now, Deadline: now.Add(15 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(map[string]any{"job_id": id, "status": "completed", "is_prohibited": false,
		"completed_at": now.Format(time.RFC3339), "delivery_id": "wh_" + id})
	prohibited, done := false, now.Format(time.RFC3339)
	job := upstream.Job{JobID: id, Status: upstream.StatusCompleted, IsProhibited: &prohibited, CompletedAt: &done, Raw: raw}
	if out, err := d.Deliver(ctx, job, contract.SourceWebhook, now); err != nil || out != jobs.Published {
		t.Fatalf("deliver: %v, %v", out, err)
	}
	msgs := natstest.StreamMsgs(t, js, contract.Default.StreamResults)
	if len(msgs) != 1 || msgs[0].Subject != contract.Default.ResultSubject("audio") {
		t.Fatalf("%d results, want one on results.audio", len(msgs))
	}
	if err := validate(t, sch.result, msgs[0].Data); err != nil {
		t.Fatalf("result does not match result.v1.schema.json: %v\n%s", err, msgs[0].Data)
	}
	var body struct {
		Type   string `json:"type"`
		Bridge struct {
			Filled []string `json:"filled"`
		} `json:"bridge"`
	}
	if err := json.Unmarshal(msgs[0].Data, &body); err != nil {
		t.Fatal(err)
	}
	if body.Type != "audio" || !reflect.DeepEqual(body.Bridge.Filled, []string{"type"}) {
		t.Fatalf("type %q, filled %v; want audio, [type]", body.Type, body.Bridge.Filled)
	}
}
