package submit

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

// badSubmit is a submit request the bridge must refuse with code 400 itself.
type badSubmit struct {
	name     string
	modality string
	body     string
	wantDesc string
	// wantField is the field the JSON error body blames; empty when the body as a whole is bad.
	wantField string
}

// badSubmits is every class of bad submit request; FuzzSubmitRequest is seeded from it.
func badSubmits() []badSubmit {
	return []badSubmit{
		{"missing field", "prompt", `{}`, "required", "prompt"},
		{"empty field", "prompt", `{"prompt": "   "}`, "required", "prompt"},
		{"wrong type", "prompt", `{"prompt": 42}`, "must be a string", "prompt"},
		{"null field", "prompt", `{"prompt": null}`, "must be a string", "prompt"},
		{"field of another modality", "image", `{"prompt": "x"}`, "unknown field", "prompt"},
		{"unknown field", "prompt", `{"prompt": "x", "mode": "fast"}`, "unknown field", "mode"},
		{"not JSON", "prompt", `prompt=x`, "JSON object", ""},
		{"JSON array", "prompt", `["x"]`, "JSON object", ""},
		{"JSON null", "prompt", `null`, "JSON object", ""},
		{"webhook_url given", "prompt", `{"prompt": "x", "webhook_url": "https://evil.example/hook"}`, "webhook_url", "webhook_url"},
		{"bad URL scheme", "image", `{"image_url": "ftp://cdn.example.com/a.png"}`, "http or https", "image_url"},
		{"URL without host", "video", `{"video_url": "https:///v.mp4"}`, "no host", "video_url"},
		{"loopback URL", "image", `{"image_url": "http://127.0.0.1/a.png"}`, "public", "image_url"},
		{"localhost URL", "image", `{"image_url": "http://localhost:8080/a.png"}`, "public", "image_url"},
		{"prompt too long", "prompt", `{"prompt": "` + strings.Repeat("é", 20001) + `"}`, "over 20000", "prompt"},
		{"private URL", "image", `{"image_url": "http://10.1.2.3/a.png"}`, "public", "image_url"},
		{"URL with credentials", "video", `{"video_url": "https://u:p@cdn.example.com/v.mp4"}`, "credentials", "video_url"},
		{"duplicate keys", "prompt", `{"prompt": "a", "prompt": 1}`, "must be a string", "prompt"},
	}
}

func TestBadSubmitNeverReachesUpstream(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	e.startSubmitter()
	for _, tt := range badSubmits() {
		t.Run(tt.name, func(t *testing.T) {
			reply := e.Request(contract.Default.SubjectSubmit+tt.modality, []byte(tt.body), nil)
			if code := reply.Header.Get(micro.ErrorCodeHeader); code != "400" {
				t.Fatalf("code %q (%s), want 400", code, reply.Header.Get(micro.ErrorHeader))
			}
			if desc := reply.Header.Get(micro.ErrorHeader); !strings.Contains(desc, tt.wantDesc) {
				t.Fatalf("description %q, want it to mention %q", desc, tt.wantDesc)
			}
			// The body repeats the error for a person using `nats req`, and names the field to blame.
			var body ErrorBody
			if err := json.Unmarshal(reply.Data, &body); err != nil {
				t.Fatalf("error body %q: %v", reply.Data, err)
			}
			if body.Code != "INVALID_REQUEST" || !strings.Contains(body.Message, tt.wantDesc) || body.Field != tt.wantField {
				t.Fatalf("error body %s, want code INVALID_REQUEST, a message mentioning %q and field %q", reply.Data, tt.wantDesc, tt.wantField)
			}
		})
	}
	if n := e.Sim.CallCount(simulator.EndpointSubmit); n != 0 {
		t.Fatalf("%d upstream submissions, want 0", n)
	}
	if n := e.Sim.CallCount(simulator.EndpointJob); n != 0 {
		t.Fatalf("%d upstream job reads, want 0", n)
	}
}

func TestSubmitUpstreamErrorsKeepTheirStatus(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	e.startSubmitter()
	// The default key lacks moderate:chat: 403 FORBIDDEN passes through.
	reply := e.Request(contract.Default.SubjectSubmit+"chat", []byte(`{"prompt": "hi"}`), nil)
	if code, desc := reply.Header.Get(micro.ErrorCodeHeader), reply.Header.Get(micro.ErrorHeader); code != "403" ||
		!strings.HasPrefix(desc, "FORBIDDEN: ") {
		t.Fatalf("chat without scope: %q %q, want 403 FORBIDDEN: ...", code, desc)
	}
	e.Sim.SetFault(simulator.EndpointSubmit, simulator.Fault{RateLimitRate: 1})
	reply = e.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt": "hi"}`), nil)
	if code, desc := reply.Header.Get(micro.ErrorCodeHeader), reply.Header.Get(micro.ErrorHeader); code != "429" ||
		!strings.HasPrefix(desc, "RATE_LIMITED: ") {
		t.Fatalf("rate limited: %q %q, want 429 RATE_LIMITED: ...", code, desc)
	}
	// 503 SUBMISSION_STATUS_UNKNOWN with a job_id: tracked as pending, answered with status unknown.
	e.Sim.SetFault(simulator.EndpointSubmit, simulator.Fault{StatusUnknownRate: 1})
	r := e.Submit("prompt", map[string]string{"prompt": "maybe"})
	if r.Status != StatusUnknown {
		t.Fatalf("status %q, want %q", r.Status, StatusUnknown)
	}
	if rec := e.Record(r.JobID); rec.State != jobs.StatePending || rec.Origin != jobs.OriginSubmit {
		t.Fatalf("record %+v", rec)
	}
}

func TestIdempotencyKeyPreventsSecondJob(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{
		Faults: map[string]simulator.Fault{simulator.EndpointSubmit: {Latency: 100 * time.Millisecond}},
	})
	e.startSubmitter()
	hdr := map[string]string{HeaderIdempotencyKey: "order-1234"}
	body := []byte(`{"prompt": "buy now"}`)

	const concurrent = 6
	replies := make([]Reply, concurrent)
	var wg sync.WaitGroup
	for i := range replies {
		wg.Go(func() {
			m := e.Request(contract.Default.SubjectSubmit+"prompt", body, hdr)
			if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
				t.Errorf("request %d: %s %s", i, code, m.Header.Get(micro.ErrorHeader))
				return
			}
			_ = json.Unmarshal(m.Data, &replies[i])
		})
	}
	wg.Wait()
	for i, r := range replies {
		if r.JobID == "" || r.JobID != replies[0].JobID {
			t.Fatalf("reply %d job %q, want all %q", i, r.JobID, replies[0].JobID)
		}
	}
	if n := e.Sim.CallCount(simulator.EndpointSubmit); n != 1 {
		t.Fatalf("%d upstream submissions, want 1", n)
	}
	if rec := e.Record(replies[0].JobID); rec.IdempotencyKey != "order-1234" {
		t.Fatalf("record idempotency key %q", rec.IdempotencyKey)
	}

	// The same key on another modality, or another key, is another job.
	other := e.Request(contract.Default.SubjectSubmit+"chat", body, hdr)
	if other.Header.Get(micro.ErrorCodeHeader) != "403" { // chat lacks the scope: but it did reach the upstream
		t.Fatalf("chat with the same key: %q", other.Header.Get(micro.ErrorHeader))
	}
	if n := e.Sim.CallCount(simulator.EndpointSubmit); n != 2 {
		t.Fatalf("%d upstream submissions, want 2", n)
	}

	// A final upstream error releases the key: a retry with it submits.
	hdr2 := map[string]string{HeaderIdempotencyKey: "order-5678"}
	e.Sim.SetFault(simulator.EndpointSubmit, simulator.Fault{ErrorRate: 1, ErrorStatus: 500})
	if m := e.Request(contract.Default.SubjectSubmit+"prompt", body, hdr2); m.Header.Get(micro.ErrorCodeHeader) != "500" {
		t.Fatalf("want 500, got %q %q", m.Header.Get(micro.ErrorCodeHeader), m.Header.Get(micro.ErrorHeader))
	}
	e.Sim.SetFault(simulator.EndpointSubmit, simulator.Fault{})
	m := e.Request(contract.Default.SubjectSubmit+"prompt", body, hdr2)
	var r Reply
	if err := json.Unmarshal(m.Data, &r); err != nil || r.JobID == "" || r.JobID == replies[0].JobID {
		t.Fatalf("retry after a failed submission: %q %q", m.Data, m.Header.Get(micro.ErrorHeader))
	}
	if n := e.Sim.CallCount(simulator.EndpointSubmit); n != 4 {
		t.Fatalf("%d upstream submissions, want 4", n)
	}
}

// TestStatusRequestsHaveTheirOwnMetric: jobs.status requests are counted in
// bridge_submit_status_requests_total, not as a modality "status" of bridge_submit_requests_total.
func TestStatusRequestsHaveTheirOwnMetric(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	s := e.startSubmitter()
	reply := e.Request(contract.Default.SubjectJobStatus, []byte(`{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f"}`), nil)
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "404" {
		t.Fatalf("code %q, want 404", code)
	}
	e.Request(contract.Default.SubjectJobStatus, []byte(`{"job_id":"nope"}`), nil)
	for _, outcome := range []string{"not_found", "invalid"} {
		if v := testutil.ToFloat64(s.metrics.statusRequests.WithLabelValues(outcome)); v != 1 {
			t.Errorf("bridge_submit_status_requests_total{outcome=%q} = %v, want 1", outcome, v)
		}
	}
	if n := testutil.CollectAndCount(s.metrics.requests, "bridge_submit_requests_total"); n != 0 {
		t.Errorf("jobs.status still counted as a modality: %d series of bridge_submit_requests_total", n)
	}
}
