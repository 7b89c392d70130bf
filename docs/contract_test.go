package docs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// schemas compiles the JSON Schemas of docs/schema, asserting formats (date-time), as a client would.
type schemas struct {
	result, status, record, submitReply, errorBody *jsonschema.Schema
}

func compileSchemas(t *testing.T) schemas {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	compile := func(loc string) *jsonschema.Schema {
		t.Helper()
		s, err := c.Compile(loc)
		if err != nil {
			t.Fatalf("compile %s: %v", loc, err)
		}
		return s
	}
	return schemas{
		result:      compile("schema/result.v1.schema.json"),
		status:      compile("schema/job-status.schema.json"),
		record:      compile("schema/job-status.schema.json#/$defs/record"),
		submitReply: compile("schema/submit-reply.schema.json"),
		errorBody:   compile("schema/error.schema.json"),
	}
}

func validate(t *testing.T, s *jsonschema.Schema, b []byte) error {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return s.Validate(inst)
}

func TestRealMessagesMatchSchemas(t *testing.T) {
	sch := compileSchemas(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// What a result goes through: the bridge's streams and buckets, the JOBS store and a deliverer. An
	// unknown field on every job object: the result must keep it, and the schema must allow it.
	w := testworld.New(t, testworld.WithSimulator(simulator.Config{ExtraFields: map[string]any{"model_version": "sim-7"}}))
	js, store, d, sim, api := w.JS, w.Store, w.Deliverer, w.Sim, w.API

	terminal := func(id string) upstream.Job {
		t.Helper()
		var job upstream.Job
		natstest.WaitFor(t, 10*time.Second, func() error {
			var err error
			if job, err = api.GetJob(ctx, id, upstream.ClassVerify); err != nil {
				return err
			}
			if !job.Terminal() {
				return fmt.Errorf("job %s is %s", id, job.Status)
			}
			return nil
		})
		return job
	}
	expect := func(what string, got, want jobs.Outcome, err error) {
		t.Helper()
		if err != nil || got != want {
			t.Fatalf("%s: %v, %v; want %v", what, got, err, want)
		}
	}

	// 1. A prompt job whose webhook was verified: results.prompt, source webhook.
	sub, err := api.Submit(ctx, "prompt", map[string]string{"prompt": "is this fine?"}, "")
	if err != nil {
		t.Fatal(err)
	}
	subReply, _ := json.Marshal(sub) // the bridge answers the upstream's job_id and status as they are
	if err := validate(t, sch.submitReply, subReply); err != nil {
		t.Errorf("submit reply %s: %v", subReply, err)
	}
	if _, err := store.Create(ctx, jobs.Record{JobID: sub.JobID, Modality: "prompt", State: jobs.StatePending,
		Origin: jobs.OriginSubmit, SubmittedAt: time.Now().UTC(), Deadline: time.Now().Add(5 * time.Minute).UTC(),
		IdempotencyKey: "order-1"}); err != nil {
		t.Fatal(err)
	}
	out, err := d.Deliver(ctx, terminal(sub.JobID), contract.SourceWebhook, time.Now())
	expect("deliver prompt", out, jobs.Published, err)

	// 2. An image job still processing at its deadline: a timeout result from its last answer, then,
	// once the upstream finishes it, its late result (source poll) on results.late.image.
	sim.SetHoldNew(true)
	late, err := api.Submit(ctx, "image", map[string]string{"image_url": "https://example.com/cat.png"}, "")
	sim.SetHoldNew(false)
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-10 * time.Minute).UTC()
	if _, err := store.Create(ctx, jobs.Record{JobID: late.JobID, Modality: "image", State: jobs.StatePending,
		Origin: jobs.OriginSubmit, SubmittedAt: past, Deadline: past.Add(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	last, err := api.GetJob(ctx, late.JobID, upstream.ClassPoll)
	if err != nil {
		t.Fatal(err)
	}
	out, err = d.TimeOut(ctx, late.JobID, &last)
	expect("time out image", out, jobs.Published, err)
	if err := sim.CompleteJob(late.JobID, simulator.Outcome{Prohibited: true}); err != nil {
		t.Fatal(err)
	}
	out, err = d.Deliver(ctx, terminal(late.JobID), contract.SourcePoll, time.Now())
	expect("deliver late image", out, jobs.PublishedLate, err)

	// 3. A video job the upstream never answered for: a synthesized timeout result.
	lost := uuid.NewString()
	if _, err := store.Create(ctx, jobs.Record{JobID: lost, Modality: "video", State: jobs.StatePending,
		Origin: jobs.OriginSubmit, SubmittedAt: past, Deadline: past.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	out, err = d.TimeOut(ctx, lost, nil)
	expect("time out video", out, jobs.Published, err)

	// 4. A pending job (no result yet), first seen in a webhook.
	pending := uuid.NewString()
	if _, err := store.Create(ctx, jobs.Record{JobID: pending, Modality: "chat", State: jobs.StatePending,
		Origin: jobs.OriginWebhook, SubmittedAt: time.Now().UTC(), Deadline: time.Now().Add(5 * time.Minute).UTC()}); err != nil {
		t.Fatal(err)
	}

	// Every RESULTS message, in order, with its subject and source.
	msgs := natstest.StreamMsgs(t, js, contract.Default.StreamResults)
	want := []struct{ subject, msgID, source string }{
		{"results.prompt", sub.JobID, "webhook"},
		{"results.image", late.JobID, "timeout"},
		{"results.late.image", late.JobID + ".late", "poll"},
		{"results.video", lost, "timeout"},
	}
	if len(msgs) != len(want) {
		t.Fatalf("RESULTS has %d messages, want %d", len(msgs), len(want))
	}
	bySeq := map[uint64][]byte{}
	for i, m := range msgs {
		w := want[i]
		if m.Subject != w.subject || m.Header.Get("Nats-Msg-Id") != w.msgID || m.Header.Get(contract.HeaderBridgeSource) != w.source {
			t.Errorf("message %d: subject %s, Nats-Msg-Id %s, Bridge-Source %s; want %s, %s, %s", i, m.Subject,
				m.Header.Get("Nats-Msg-Id"), m.Header.Get(contract.HeaderBridgeSource), w.subject, w.msgID, w.source)
		}
		if err := validate(t, sch.result, m.Data); err != nil {
			t.Errorf("%s message does not match result.v1.schema.json: %v\n%s", m.Subject, err, m.Data)
		}
		var body struct {
			Bridge struct {
				Source        string `json:"source"`
				SchemaVersion int    `json:"schema_version"`
			} `json:"bridge"`
			ModelVersion string `json:"model_version"`
		}
		if err := json.Unmarshal(m.Data, &body); err != nil || body.Bridge.Source != w.source || body.Bridge.SchemaVersion != 1 {
			t.Errorf("%s: bridge.source %q, schema_version %d (%v), want %q, 1", m.Subject, body.Bridge.Source,
				body.Bridge.SchemaVersion, err, w.source)
		}
		undocumentedBridgeFields(t, m.Data)
		if i < 3 && body.ModelVersion != "sim-7" { // the synthesized timeout has no upstream object to keep
			t.Errorf("%s: unknown upstream field model_version = %q, want sim-7", m.Subject, body.ModelVersion)
		}
		bySeq[m.Sequence] = m.Data
	}

	// Every JOBS record as stored, and the jobs.status reply the submit service builds from it.
	for _, id := range []string{sub.JobID, late.JobID, lost, pending} {
		e, err := store.KV().Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate(t, sch.record, e.Value()); err != nil {
			t.Errorf("JOBS record %s does not match job-status.schema.json#/$defs/record: %v\n%s", id, err, e.Value())
		}
		rec, err := jobs.Decode(e.Value())
		if err != nil {
			t.Fatal(err)
		}
		reply := map[string]json.RawMessage{"job": e.Value(), "result": json.RawMessage("null")}
		if r, ok := bySeq[rec.ResultSeq]; ok {
			reply["result"] = r
		}
		if r, ok := bySeq[rec.LateSeq]; ok {
			reply["late_result"] = r
		}
		b, _ := json.Marshal(reply)
		if err := validate(t, sch.status, b); err != nil {
			t.Errorf("jobs.status reply for %s does not match job-status.schema.json: %v\n%s", id, err, b)
		}
	}

	// The schemas are not vacuous: the first result without its bridge block, or with a made-up source, and
	// a timeout result claiming success, are rejected.
	var first map[string]any
	if err := json.Unmarshal(msgs[0].Data, &first); err != nil {
		t.Fatal(err)
	}
	mutate := func(fn func(m, bridge map[string]any)) []byte {
		m := map[string]any{}
		b, _ := json.Marshal(first)
		_ = json.Unmarshal(b, &m)
		bridge, _ := m["bridge"].(map[string]any)
		if bridge == nil {
			bridge = map[string]any{}
		}
		fn(m, bridge)
		b, _ = json.Marshal(m)
		return b
	}
	for name, b := range map[string][]byte{
		"no bridge block":  mutate(func(m, _ map[string]any) { delete(m, "bridge") }),
		"source carrier":   mutate(func(_, br map[string]any) { br["source"] = "carrier" }),
		"not terminal":     mutate(func(m, _ map[string]any) { m["status"] = "processing" }),
		"timeout complete": mutate(func(_, br map[string]any) { br["source"] = "timeout" }),
		"no received_at":   mutate(func(_, br map[string]any) { delete(br, "received_at") }),
	} {
		if validate(t, sch.result, b) == nil {
			t.Errorf("result.v1.schema.json accepts a result with %s: %s", name, b)
		}
	}
}

// TestRecordSchemaNamesEveryField keeps the JOBS record schema and jobs.Record in step both ways, so a new
// field (even one the test's records leave empty) cannot go undocumented.
func TestRecordSchemaNamesEveryField(t *testing.T) {
	var doc struct {
		Defs struct {
			Record struct {
				Properties map[string]any `json:"properties"`
			} `json:"record"`
		} `json:"$defs"`
	}
	readJSON(t, "schema/job-status.schema.json", &doc)
	fields := map[string]bool{}
	rt := reflect.TypeFor[jobs.Record]()
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		fields[name] = true
		if _, ok := doc.Defs.Record.Properties[name]; !ok {
			t.Errorf("jobs.Record field %s (json %q) is not in job-status.schema.json#/$defs/record", rt.Field(i).Name, name)
		}
	}
	for name := range doc.Defs.Record.Properties {
		if !fields[name] {
			t.Errorf("job-status.schema.json#/$defs/record has %q, which jobs.Record does not", name)
		}
	}
}

func TestSubmitReplyAndErrorSchemas(t *testing.T) {
	sch := compileSchemas(t)
	tests := []struct {
		name   string
		schema *jsonschema.Schema
		doc    string
		valid  bool
	}{
		{"queued", sch.submitReply, `{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f","status":"queued"}`, true},
		{"status unknown", sch.submitReply, `{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f","status":"unknown"}`, true},
		{"no job_id", sch.submitReply, `{"status":"queued"}`, false},
		{"job_id not a UUID", sch.submitReply, `{"job_id":"42","status":"queued"}`, false},
		// A job compacted into the history (issue 22): no record, the history's entry.
		{"compacted job", sch.status, `{"job":null,"history":{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f","delivered_at":"2026-12-06T09:30:15.123Z","result_seq":42},"result":null}`, true},
		{"compacted job, delivery unknown", sch.status, `{"job":null,"history":{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f"},"result":null}`, true},
		{"history with a stray field", sch.status, `{"job":null,"history":{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f","state":"delivered"},"result":null}`, false},
		{"bad request", sch.errorBody, `{"code":"INVALID_REQUEST","message":"prompt: required","field":"prompt"}`, true},
		{"busy", sch.errorBody, `{"code":"BUSY","message":"the upstream budget cannot carry this job now"}`, true},
		{"no code", sch.errorBody, `{"message":"x"}`, false},
		{"empty field", sch.errorBody, `{"code":"INVALID_REQUEST","message":"x","field":""}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validate(t, tt.schema, []byte(tt.doc))
			if (err == nil) != tt.valid {
				t.Errorf("valid = %v, want %v: %v", err == nil, tt.valid, err)
			}
		})
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// repoRoot is the repository root, one up from docs/.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// undocumentedBridgeFields fails for a field of a result's bridge block that result.v1.schema.json does not
// name. The schema lets consumers meet fields added within the version (its bridge block is open); the
// bridge itself publishes only what the schema documents.
func undocumentedBridgeFields(t *testing.T, result []byte) {
	t.Helper()
	var sch struct {
		Defs struct {
			Bridge struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"bridge"`
		} `json:"$defs"`
	}
	raw, err := os.ReadFile("schema/result.v1.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var msg struct {
		Bridge map[string]json.RawMessage `json:"bridge"`
	}
	if err := json.Unmarshal(raw, &sch); err != nil || len(sch.Defs.Bridge.Properties) == 0 {
		t.Fatalf("result.v1.schema.json: no bridge properties (%v)", err)
	}
	if err := json.Unmarshal(result, &msg); err != nil {
		t.Fatal(err)
	}
	for k := range msg.Bridge {
		if _, ok := sch.Defs.Bridge.Properties[k]; !ok {
			t.Errorf("result's bridge.%s is not in result.v1.schema.json", k)
		}
	}
}
