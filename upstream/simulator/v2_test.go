package simulator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ingest"
	"github.com/evershield/bridge/internal/ingesttest"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestV2RetiredEndpoints: /moderate/prompt and /moderate/chat answer 410 ENDPOINT_RETIRED and create no
// job; the calls are counted under submit.
func TestV2RetiredEndpoints(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{}, simtest.WithContract(simulator.ContractV2))
	for _, m := range []string{"prompt", "chat"} {
		status, _, body := do(t, "POST", sim.URL()+"/moderate/"+m, simulator.DefaultKey, urlencoded, form("prompt", "hello"))
		if status != 410 || body["error"] != "ENDPOINT_RETIRED" || body["statusCode"] != float64(410) ||
			!strings.Contains(body["message"].(string), "/moderate/text") {
			t.Fatalf("%s: %d %v", m, status, body)
		}
	}
	if jobs := sim.Jobs(); len(jobs) != 0 {
		t.Fatalf("retired calls created jobs %+v", jobs)
	}
	calls := sim.Calls(simulator.EndpointSubmit)
	if len(calls) != 2 || calls[0].Status != 410 || calls[1].Path != "/api/v1/moderate/chat" {
		t.Fatalf("calls %+v", calls)
	}
	// The same paths are alive in v1.
	v1 := simtest.Run(t, simulator.Config{})
	if status, _, body := do(t, "POST", v1.URL()+"/moderate/prompt", simulator.DefaultKey, urlencoded, form("prompt", "hello")); status != 202 {
		t.Fatalf("v1 prompt: %d %v", status, body)
	}
}

// TestV2SubmissionRules covers the v2 fields, limits and the new 413/415/422 answers through raw HTTP.
func TestV2SubmissionRules(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{}, simtest.WithContract(simulator.ContractV2))
	tests := []struct {
		name, modality, body string
		status               int
		code, inMessage      string
	}{
		{"text", "text", form("text", "hello"), 202, "", ""},
		{"text at the limit", "text", form("text", strings.Repeat("é", 20_000)), 202, "", ""},
		{"text over the limit", "text", form("text", strings.Repeat("é", 20_001)), 400, "INVALID_REQUEST", "20000"},
		{"text missing", "text", form("webhook_url", "https://example.com/h"), 400, "INVALID_REQUEST", "text"},
		{"v1 prompt field", "text", form("prompt", "hello"), 400, "INVALID_REQUEST", "prompt"},
		{"audio", "audio", form("audio", "https://example.com/a.mp3"), 202, "", ""},
		{"image", "image", form("image", "https://example.com/a.png"), 202, "", ""},
		{"video", "video", form("video", "https://example.com/v.mp4"), 202, "", ""},
		{"v1 image_url field", "image", form("image_url", "https://example.com/a.png"), 400, "INVALID_REQUEST", "image_url"},
		{"v1 video_url field", "video", form("video_url", "https://example.com/v.mp4"), 400, "INVALID_REQUEST", "video_url"},
		{"loopback audio", "audio", form("audio", "http://127.0.0.1/a.mp3"), 400, "INVALID_REQUEST", "audio"},
		{"ftp video", "video", form("video", "ftp://example.com/v.mp4"), 400, "INVALID_REQUEST", "video"},
		{"field over 16384 bytes", "image", form("image", "https://example.com/a.png", "note", strings.Repeat("x", 16_385)), 400, "INVALID_REQUEST", "note"},
		{"hls manifest", "video", form("video", "https://cdn.example.com/live/index.m3u8"), 415, "UNSUPPORTED_MEDIA", ".m3u8"},
		{"web page", "image", form("image", "https://example.com/gallery.html"), 415, "UNSUPPORTED_MEDIA", ".html"},
		{"program", "audio", form("audio", "https://example.com/setup.exe"), 415, "UNSUPPORTED_MEDIA", ".exe"},
		{"unreachable", "video", form("video", "https://media.unreachable.invalid/v.mp4"), 422, "MEDIA_UNREACHABLE", "video"},
		{"too large", "video", form("video", "https://example.com/big.mp4?sim:too-large"), 413, "PAYLOAD_TOO_LARGE", "limit"},
		{"nine fields", "text", form("text", "a", "f1", "1", "f2", "2", "f3", "3", "f4", "4", "f5", "5", "f6", "6", "f7", "7", "f8", "8"),
			413, "PAYLOAD_TOO_LARGE", "8"},
		{"unknown modality", "pre", form("text", "a"), 404, "NOT_FOUND", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := do(t, "POST", sim.URL()+"/moderate/"+tt.modality, simulator.DefaultKey, urlencoded, tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %v", status, tt.status, body)
			}
			if status == 202 {
				if body["status"] != "queued" || body["job_id"] == "" {
					t.Fatalf("answer %v", body)
				}
				return
			}
			msg, _ := body["message"].(string)
			if body["error"] != tt.code || body["statusCode"] != float64(tt.status) || !strings.Contains(msg, tt.inMessage) {
				t.Fatalf("body %v, want %s naming %q", body, tt.code, tt.inMessage)
			}
		})
	}
	// Refused submissions created no job: only the five 202s did.
	if n := len(sim.Jobs()); n != 5 {
		t.Fatalf("%d jobs, want 5", n)
	}
}

// verifySigned checks the Standard Webhooks headers of one v2 delivery with the bridge's own signing code
// (ingest.ParseSecret and ingest.Sign, which its verifier uses) and returns the webhook-id.
func verifySigned(t *testing.T, secret string, r simtest.Received) string {
	t.Helper()
	key, err := ingest.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	id, ts := r.Header.Get(ingest.HeaderWebhookID), r.Header.Get(ingest.HeaderWebhookTimestamp)
	if want := ingest.Sign(key, id, ts, r.Body); r.Header.Get(ingest.HeaderWebhookSignature) != want {
		t.Fatalf("webhook-signature %q, want %q", r.Header.Get(ingest.HeaderWebhookSignature), want)
	}
	if r.Header.Get("X-Omnifence-Delivery-Id") != id {
		t.Fatalf("X-Omnifence-Delivery-Id %q, webhook-id %q", r.Header.Get("X-Omnifence-Delivery-Id"), id)
	}
	return id
}

// TestV2JobAndWebhookShapes follows a job of each v2 modality to the end: GET /job has its type and key,
// the webhook has the v2 body and is signed.
func TestV2JobAndWebhookShapes(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1}, simtest.WithContract(simulator.ContractV2))
	if !strings.HasPrefix(sim.WebhookSecret(), "whsec_") {
		t.Fatalf("generated secret %q", sim.WebhookSecret())
	}
	rcv := simtest.NewReceiver(t)
	c := simtest.Client(t, sim)
	tests := []struct {
		modality, field, value string
		prohibited             bool
		wantJobKeys            []string
		wantHookKeys           []string
	}{
		{"text", "text", "hello", false,
			[]string{"api_key_id", "api_key_name", "categories", "completed_at", "created_at", "is_prohibited", "job_id", "status", "type"},
			[]string{"completed_at", "delivery_id", "is_prohibited", "job_id", "status"}},
		{"text", "text", "sim:reject", true,
			[]string{"api_key_id", "api_key_name", "categories", "completed_at", "created_at", "is_prohibited", "job_id", "reason", "status", "type"},
			[]string{"completed_at", "delivery_id", "is_prohibited", "job_id", "reason", "status"}},
		{"audio", "audio", "https://example.com/a.mp3?sim:reject", true,
			[]string{"api_key_id", "api_key_name", "categories", "completed_at", "created_at", "is_prohibited", "job_id", "reason", "status", "type"},
			[]string{"completed_at", "delivery_id", "is_prohibited", "job_id", "reason", "status"}},
		{"image", "image", "https://example.com/a.png", false,
			[]string{"api_key_id", "api_key_name", "categories", "completed_at", "created_at", "is_prohibited", "job_id", "nsfw", "status", "type"},
			[]string{"completed_at", "delivery_id", "is_prohibited", "job_id", "nsfw", "status"}},
		{"video", "video", "https://example.com/v.mp4", false,
			[]string{"api_key_id", "api_key_name", "categories", "completed_at", "created_at", "is_prohibited", "job_id", "nsfw", "status", "type"},
			[]string{"completed_at", "delivery_id", "is_prohibited", "job_id", "nsfw", "status"}},
	}
	for _, tt := range tests {
		t.Run(tt.modality+"/"+tt.value, func(t *testing.T) {
			s, err := c.Submit(natstest.Ctx(t), tt.modality, map[string]string{tt.field: tt.value}, rcv.URL+"/webhook/"+tt.modality)
			if err != nil {
				t.Fatal(err)
			}
			j := waitTerminal(t, c, s.JobID)
			var extra struct {
				KeyID   string `json:"api_key_id"`
				KeyName string `json:"api_key_name"`
			}
			json.Unmarshal(j.Raw, &extra)
			if j.Type != tt.modality || *j.IsProhibited != tt.prohibited || extra.KeyID != "key_1" || extra.KeyName != "default key" {
				t.Fatalf("job %s", j.Raw)
			}
			if got := keys(j.Raw); !slices.Equal(got, tt.wantJobKeys) {
				t.Fatalf("job keys %v, want %v", got, tt.wantJobKeys)
			}
			var hook simtest.Received
			natstest.WaitFor(t, 10*time.Second, func() error {
				for _, r := range rcv.Received() {
					if strings.Contains(string(r.Body), s.JobID) {
						hook = r
						return nil
					}
				}
				return errors.New("no webhook yet")
			})
			if got := keys(hook.Body); !slices.Equal(got, tt.wantHookKeys) {
				t.Fatalf("webhook keys %v, want %v: %s", got, tt.wantHookKeys, hook.Body)
			}
			id := verifySigned(t, sim.WebhookSecret(), hook)
			var body struct {
				DeliveryID string `json:"delivery_id"`
				NSFW       *bool  `json:"nsfw"`
			}
			json.Unmarshal(hook.Body, &body)
			if id != "wh_"+s.JobID || body.DeliveryID != id {
				t.Fatalf("webhook-id %q, delivery_id %q, job %s", id, body.DeliveryID, s.JobID)
			}
			if body.NSFW != nil && *body.NSFW {
				t.Fatalf("nsfw on a passed job: %s", hook.Body)
			}
		})
	}
}

// TestV2WebhookVerifiedByIngest: the bridge's own ingest handler, configured with the simulator's secret,
// accepts the v2 webhooks into WEBHOOKS; with another secret it refuses them with 401.
func TestV2WebhookVerifiedByIngest(t *testing.T) {
	js := testworld.New(t).JS
	sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1}, simtest.WithContract(simulator.ContractV2))
	for _, tt := range []struct {
		name, secret string
		wantStatus   int
	}{
		{"same secret", sim.WebhookSecret(), 200},
		{"other secret", "whsec_b3RoZXItc2VjcmV0LWtleQ==", 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ingest.New(ingest.Config{Publisher: js, Secret: tt.secret})
			if err != nil {
				t.Fatal(err)
			}
			url := ingesttest.Serve(t, ingest.ServerConfig{Handler: h})
			c := simtest.Client(t, sim)
			s, err := c.Submit(natstest.Ctx(t), "text", map[string]string{"text": "hello"}, url+"/webhook/text")
			if err != nil {
				t.Fatal(err)
			}
			natstest.WaitFor(t, 10*time.Second, func() error {
				w := sim.Webhooks(s.JobID)
				if len(w) == 0 {
					return errors.New("no attempt yet")
				}
				if w[0].Status != tt.wantStatus {
					return fmt.Errorf("first attempt %+v, want status %d", w[0], tt.wantStatus)
				}
				return nil
			})
			if tt.wantStatus != 200 {
				return
			}
			natstest.WaitFor(t, 10*time.Second, func() error { // stored in WEBHOOKS under its job id
				for _, m := range natstest.StreamMsgs(t, js, contract.Default.StreamWebhooks) {
					if m.Header.Get("Nats-Msg-Id") == s.JobID {
						return nil
					}
				}
				return errors.New("not in WEBHOOKS")
			})
		})
	}
}

// failingReceiver answers the first n requests with fail (a status, or 0 to stall until the sender's
// timeout) and 200 afterwards, recording every request's webhook-id.
type failingReceiver struct {
	URL string
	mu  sync.Mutex
	ids []string
}

func newFailingReceiver(t *testing.T, n, fail int) *failingReceiver {
	fr := &failingReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck // read in full, so a closed connection cancels r.Context()
		fr.mu.Lock()
		fr.ids = append(fr.ids, r.Header.Get("webhook-id"))
		k := len(fr.ids)
		fr.mu.Unlock()
		switch {
		case k > n:
			w.WriteHeader(200)
		case fail == 0:
			<-r.Context().Done() // never answers in time
		default:
			w.WriteHeader(fail)
		}
	}))
	t.Cleanup(srv.Close)
	fr.URL = srv.URL
	return fr
}

func (fr *failingReceiver) got() []string {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return slices.Clone(fr.ids)
}

// TestV2WebhookRetried: a webhook answered 500, or not answered within the timeout, is sent again on the
// (compressed) schedule with the same webhook-id until a 2xx; after 12 failed attempts it is given up.
func TestV2WebhookRetried(t *testing.T) {
	cfg := simulator.Config{QueueDelay: -1, ProcessDelay: -1, WebhookRetryScale: 1e-5, WebhookTimeout: 200 * time.Millisecond}
	for _, tt := range []struct {
		name               string
		failures, fail     int
		wantAttempts       int
		wantLast           string
		wantRetries, wantX int64
	}{
		{"500 then 200", 3, 500, 4, simulator.WebhookDelivered, 3, 0},
		{"timeout then 200", 2, 0, 3, simulator.WebhookDelivered, 2, 0},
		{"500 forever", 1000, 500, 12, simulator.WebhookFailed, 11, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sim := simtest.Run(t, cfg, simtest.WithContract(simulator.ContractV2))
			rcv := newFailingReceiver(t, tt.failures, tt.fail)
			c := simtest.Client(t, sim)
			s, err := c.Submit(natstest.Ctx(t), "text", map[string]string{"text": "hello"}, rcv.URL)
			if err != nil {
				t.Fatal(err)
			}
			natstest.WaitFor(t, 20*time.Second, func() error {
				if st := sim.Stats().Webhooks; st.Delivered+st.Exhausted != 1 {
					return fmt.Errorf("stats %+v", st)
				}
				return nil
			})
			w := sim.Webhooks(s.JobID)
			if len(w) != tt.wantAttempts || w[len(w)-1].Outcome != tt.wantLast {
				t.Fatalf("%d attempts, want %d: %+v", len(w), tt.wantAttempts, w)
			}
			for i, a := range w {
				if a.Attempt != i+1 || a.ID != "wh_"+s.JobID {
					t.Fatalf("attempt %d: %+v", i+1, a)
				}
			}
			ids := rcv.got()
			if len(ids) != tt.wantAttempts {
				t.Fatalf("receiver got %d requests, want %d", len(ids), tt.wantAttempts)
			}
			for _, id := range ids {
				if id != "wh_"+s.JobID {
					t.Fatalf("webhook-ids %v", ids)
				}
			}
			if st := sim.Stats().Webhooks; st.Retries != tt.wantRetries || st.Exhausted != tt.wantX {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// TestV2ScheduleIsAboutFiveHours: the documented schedule is 12 attempts over about 5 h.
func TestV2ScheduleIsAboutFiveHours(t *testing.T) {
	var total time.Duration
	for _, d := range simulator.DefaultWebhookRetrySchedule {
		total += d
	}
	if n := len(simulator.DefaultWebhookRetrySchedule) + 1; n != 12 || total < 4*time.Hour || total > 6*time.Hour {
		t.Fatalf("%d attempts over %v", n, total)
	}
}

// TestV2RateLimitHeaders: every v2 answer of an account carries x-ratelimit-*, a 429 also retry-after;
// v1 sends them only with RateLimitHeaders.
func TestV2RateLimitHeaders(t *testing.T) {
	at := time.Date(2026, 5, 19, 12, 0, 0, 0, time.UTC) // a stopped clock: the window never moves
	sim := simtest.Run(t, simulator.Config{RPM: 4, Now: func() time.Time { return at }}, simtest.WithContract(simulator.ContractV2))
	base := sim.URL()
	tests := []struct {
		name, method, path, ctype, body string
		status                          int
		remaining                       string
	}{
		{"list", "GET", "/jobs", "", "", 200, "3"},
		{"submit", "POST", "/moderate/text", urlencoded, form("text", "hi"), 202, "2"},
		{"unknown job", "GET", "/job/1b4e28ba-2fa1-11d2-883f-0016d3cca427", "", "", 404, "1"},
		{"retired", "POST", "/moderate/prompt", urlencoded, form("prompt", "hi"), 410, "0"},
		{"over the limit", "GET", "/jobs", "", "", 429, "0"},
	}
	for _, tt := range tests {
		status, h, body := do(t, tt.method, base+tt.path, simulator.DefaultKey, tt.ctype, tt.body)
		if status != tt.status || h.Get("x-ratelimit-limit") != "4" || h.Get("x-ratelimit-remaining") != tt.remaining ||
			h.Get("x-ratelimit-reset") != "60" {
			t.Fatalf("%s: %d %v, headers limit %q remaining %q reset %q", tt.name, status, body,
				h.Get("x-ratelimit-limit"), h.Get("x-ratelimit-remaining"), h.Get("x-ratelimit-reset"))
		}
		if status == 429 && (h.Get("retry-after") != "60" || body["error"] != "RATE_LIMITED") {
			t.Fatalf("429: retry-after %q, %v", h.Get("retry-after"), body)
		}
	}
	// An injected fault carries them too; an unknown key has no account to report.
	sim.SetFault(simulator.EndpointJobs, simulator.Fault{ErrorRate: 1})
	if status, h, _ := do(t, "GET", base+"/jobs", simulator.DefaultKey, "", ""); status != 503 || h.Get("x-ratelimit-limit") != "4" {
		t.Fatalf("fault: %d, headers %v", status, h)
	}
	sim.SetFault(simulator.EndpointJobs, simulator.Fault{})
	if status, h, _ := do(t, "GET", base+"/jobs", "nope", "", ""); status != 401 || h.Get("x-ratelimit-limit") != "" {
		t.Fatalf("401: %d, headers %v", status, h)
	}

	for _, tt := range []struct {
		name      string
		headers   bool
		wantLimit string
	}{{"v1 default", false, ""}, {"v1 with RateLimitHeaders", true, "60"}} {
		t.Run(tt.name, func(t *testing.T) {
			v1 := simtest.Run(t, simulator.Config{RPM: 60, RateLimitHeaders: tt.headers})
			_, h, _ := do(t, "GET", v1.URL()+"/jobs", simulator.DefaultKey, "", "")
			if h.Get("x-ratelimit-limit") != tt.wantLimit || (tt.headers && h.Get("x-ratelimit-remaining") == "") {
				t.Fatalf("headers %v", h)
			}
		})
	}
}

// TestV2RegisteredWebhook: a job without webhook_url is delivered, signed, to the registered URL; after
// DELETE /webhook/register nothing is sent. v1 has no DELETE.
func TestV2RegisteredWebhook(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1}, simtest.WithContract(simulator.ContractV2))
	rcv := simtest.NewReceiver(t)
	if status, _, body := do(t, "POST", sim.URL()+"/webhook/register", simulator.DefaultKey, "application/json",
		`{"url":"`+rcv.URL+`/global"}`); status != 200 || body["url"] != rcv.URL+"/global" {
		t.Fatalf("register: %d %v", status, body)
	}
	c := simtest.Client(t, sim)
	s, err := c.Submit(natstest.Ctx(t), "text", map[string]string{"text": "hello"}, "")
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if rcv.Len() != 1 {
			return fmt.Errorf("%d webhooks", rcv.Len())
		}
		return nil
	})
	got := rcv.Received()[0]
	if got.Path != "/global" || verifySigned(t, sim.WebhookSecret(), got) != "wh_"+s.JobID {
		t.Fatalf("webhook at %s", got.Path)
	}
	if status, _, body := do(t, "DELETE", sim.URL()+"/webhook/register", simulator.DefaultKey, "", ""); status != 200 || body["url"] != "" {
		t.Fatalf("delete: %d %v", status, body)
	}
	s2, err := c.Submit(natstest.Ctx(t), "text", map[string]string{"text": "again"}, "")
	if err != nil {
		t.Fatal(err)
	}
	waitTerminal(t, c, s2.JobID) // the target is chosen at completion: none now
	if rcv.Len() != 1 || len(sim.Webhooks(s2.JobID)) != 0 {
		t.Fatalf("webhooks after DELETE: %d received, %+v", rcv.Len(), sim.Webhooks(s2.JobID))
	}
	if n := sim.CallCount(simulator.EndpointRegister); n != 2 {
		t.Fatalf("register calls %d", n)
	}
	v1 := simtest.Run(t, simulator.Config{})
	if status, _, _ := do(t, "DELETE", v1.URL()+"/webhook/register", simulator.DefaultKey, "", ""); status != 404 {
		t.Fatalf("v1 DELETE: %d", status)
	}
}

// TestStatusUnknownJobMayExist: a 503 SUBMISSION_STATUS_UNKNOWN carries a job_id whose job exists or
// not by a seeded coin, in both contracts.
func TestStatusUnknownJobMayExist(t *testing.T) {
	for _, contract := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(contract, func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{Seed: 5, Faults: map[string]simulator.Fault{
				simulator.EndpointSubmit: {StatusUnknownRate: 1, StatusUnknownLostRate: 0.5}}}, simtest.WithContract(contract))
			c := simtest.Client(t, sim)
			path, field := "/moderate/prompt", "prompt"
			if contract == simulator.ContractV2 {
				path, field = "/moderate/text", "text"
			}
			found, lost := 0, 0
			for range 40 {
				status, _, body := do(t, "POST", sim.URL()+path, simulator.DefaultKey, urlencoded, form(field, "x"))
				id, _ := body["job_id"].(string)
				if status != 503 || body["error"] != "SUBMISSION_STATUS_UNKNOWN" || id == "" {
					t.Fatalf("%d %v", status, body)
				}
				_, err := c.GetJob(natstest.Ctx(t), id, upstream.ClassPoll)
				var ue *upstream.Error
				switch {
				case err == nil:
					found++
				case errors.As(err, &ue) && ue.Status == 404:
					lost++
				default:
					t.Fatal(err)
				}
			}
			if found == 0 || lost == 0 || len(sim.Jobs()) != found {
				t.Fatalf("found %d, lost %d, jobs %d", found, lost, len(sim.Jobs()))
			}
		})
	}
}

func TestContractConfig(t *testing.T) {
	for _, cfg := range []simulator.Config{
		{Contract: "v3"},
		{Contract: simulator.ContractV2, Modalities: map[string]string{"prompt": "prompt"}},
		{WebhookRetryScale: 0.5},
		{Contract: simulator.ContractV2, WebhookRetrySchedule: []time.Duration{-time.Second}},
		{Faults: map[string]simulator.Fault{"submit": {StatusUnknownLostRate: 2}}},
	} {
		if _, err := simulator.New(cfg); !errors.Is(err, simulator.ErrInvalidConfig) {
			t.Fatalf("New(%+v) = %v", cfg, err)
		}
	}
	sim, err := simulator.New(simulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	if sim.Contract() != simulator.ContractV1 || sim.WebhookSecret() != "" {
		t.Fatalf("default contract %q, secret %q", sim.Contract(), sim.WebhookSecret())
	}
}
