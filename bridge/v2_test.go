package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/submit"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// newV2Env is a test world whose simulator speaks v2 and whose client starts undecided
// (BRIDGE_API_CONTRACT=auto), with the submit service serving every modality of both contracts.
func newV2Env(t *testing.T, simCfg simulator.Config) *env {
	t.Helper()
	simCfg.Contract = simulator.ContractV2
	e := newEnv(t, testworld.Single, simCfg)
	e.API = e.Client(func(c *upstream.Config) { c.Contract = upstream.ContractAuto })
	e.startSubmitter(func(c *submit.Config) { c.Modalities = submit.ModalitiesFor(contract.ContractAuto) })
	e.startVerifier()
	return e
}

// TestV2RetiredPathsMapped: against a v2 upstream, moderate.prompt and moderate.chat keep working. The
// first submission finds /moderate/prompt retired (410, no job), switches to v2 and resends to
// /moderate/text: two submit calls, one job, no probe billed. The reply says where the job went; the
// result stays on results.prompt and results.chat with the upstream's own type, text.
func TestV2RetiredPathsMapped(t *testing.T) {
	e := newV2Env(t, simulator.Config{})

	reply := e.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"a cat on a mat"}`), nil)
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("moderate.prompt: %s %s", code, reply.Header.Get(micro.ErrorHeader))
	}
	if got := reply.Header.Get(contract.HeaderUpstreamEndpoint); got != "/moderate/text" {
		t.Fatalf("%s %q, want /moderate/text", contract.HeaderUpstreamEndpoint, got)
	}
	var first testworld.SubmitReply
	if err := json.Unmarshal(reply.Data, &first); err != nil {
		t.Fatal(err)
	}
	if n, jobsNow := e.Sim.CallCount(simulator.EndpointSubmit), len(e.Sim.Jobs()); n != 2 || jobsNow != 1 {
		t.Fatalf("after the first submission: %d submit calls and %d jobs at the upstream, want 2 and 1", n, jobsNow)
	}
	chat := e.Submit("chat", map[string]string{"prompt": "hello there"}).JobID
	if n := e.Sim.CallCount(simulator.EndpointSubmit); n != 3 {
		t.Fatalf("%d submit calls after the second submission, want 3", n)
	}

	e.WaitResults(contract.Default.SubjectResults+">", 2, 20*time.Second)
	want := map[string]string{first.JobID: contract.Default.ResultSubject("prompt"), chat: contract.Default.ResultSubject("chat")}
	for _, m := range e.StreamMsgs(contract.Default.StreamResults, contract.Default.SubjectResults+">") {
		var body struct {
			JobID  string         `json:"job_id"`
			Type   string         `json:"type"`
			Bridge map[string]any `json:"bridge"`
		}
		if err := json.Unmarshal(m.Data, &body); err != nil {
			t.Fatal(err)
		}
		if m.Subject != want[body.JobID] || body.Type != "text" || body.Bridge["filled"] != nil {
			t.Fatalf("result of %s on %s with type %q, bridge %v; want %s, type text, nothing filled",
				body.JobID, m.Subject, body.Type, body.Bridge, want[body.JobID])
		}
	}
	if rec := e.Record(first.JobID); rec.Modality != "prompt" {
		t.Fatalf("record modality %q, want prompt", rec.Modality)
	}
}

// TestV2MediaErrorsReachCaller: the newer contract's 413, 415 and 422 reach the caller as micro errors
// with the upstream's status and code; nothing is recorded.
func TestV2MediaErrorsReachCaller(t *testing.T) {
	e := newV2Env(t, simulator.Config{})
	for _, tc := range []struct{ url, code, name string }{
		{"https://cdn.example.com/sim:too-large.png", "413", "PAYLOAD_TOO_LARGE"},
		{"https://cdn.example.com/page.html", "415", "UNSUPPORTED_MEDIA"},
		{"https://media.invalid/a.png", "422", "MEDIA_UNREACHABLE"},
	} {
		b, _ := json.Marshal(map[string]string{"image_url": tc.url})
		reply := e.Request(contract.Default.SubjectSubmit+"image", b, nil)
		var body struct{ Code, Message string }
		_ = json.Unmarshal(reply.Data, &body)
		if reply.Header.Get(micro.ErrorCodeHeader) != tc.code || body.Code != tc.name || body.Message == "" {
			t.Fatalf("%s: %s %q body %s, want %s %s", tc.url, reply.Header.Get(micro.ErrorCodeHeader),
				reply.Header.Get(micro.ErrorHeader), reply.Data, tc.code, tc.name)
		}
	}
	if n := len(e.Sim.Jobs()); n != 0 {
		t.Fatalf("%d jobs at the upstream, want 0", n)
	}
	// A field the modality does not take is refused by the bridge, naming it.
	reply := e.Request(contract.Default.SubjectSubmit+"image", []byte(`{"image":"https://cdn.example.com/a.png"}`), nil)
	if reply.Header.Get(micro.ErrorCodeHeader) != "400" || !json.Valid(reply.Data) ||
		!strings.Contains(reply.Header.Get(micro.ErrorHeader), `"image"`) {
		t.Fatalf("field image on moderate.image: %s %q", reply.Header.Get(micro.ErrorCodeHeader), reply.Header.Get(micro.ErrorHeader))
	}
}

// TestV2StatusUnknownTrackedAsPending: 503 SUBMISSION_STATUS_UNKNOWN with a job_id is answered as a
// pending job with status unknown, recorded, and its result follows.
func TestV2StatusUnknownTrackedAsPending(t *testing.T) {
	e := newV2Env(t, simulator.Config{Faults: map[string]simulator.Fault{
		simulator.EndpointSubmit: {StatusUnknownRate: 1},
	}})
	r := e.Submit("text", map[string]string{"text": "maybe"})
	if r.Status != submit.StatusUnknown {
		t.Fatalf("reply status %q, want %q", r.Status, submit.StatusUnknown)
	}
	if rec := e.Record(r.JobID); rec.State != jobs.StatePending || rec.Modality != "text" {
		t.Fatalf("record %+v, want pending text", rec)
	}
	rec := e.WaitState(r.JobID, jobs.StateDelivered, 20*time.Second)
	if rec.ResultSubject != contract.Default.ResultSubject("text") {
		t.Fatalf("result on %s, want results.text", rec.ResultSubject)
	}
}
