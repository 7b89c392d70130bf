package simulator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

// do sends a raw request with the given key ("" = none) and returns status, headers and decoded body.
func do(t *testing.T, method, u, key, ctype, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(natstest.Ctx(t), method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object", method, u, b)
	}
	return resp.StatusCode, resp.Header, m
}

func form(kv ...string) string {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v.Encode()
}

const urlencoded = "application/x-www-form-urlencoded"

func waitTerminal(t *testing.T, c *upstream.Client, id string) upstream.Job {
	t.Helper()
	var j upstream.Job
	natstest.WaitFor(t, 10*time.Second, func() error {
		var err error
		j, err = c.GetJob(natstest.Ctx(t), id, upstream.ClassPoll)
		if err == nil && !j.Terminal() {
			err = errors.New("status " + j.Status)
		}
		return err
	})
	return j
}

func keys(raw []byte) []string {
	var m map[string]json.RawMessage
	json.Unmarshal(raw, &m)
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestLifecycleAndShapes follows jobs of each modality through to the end and checks the GET and
// webhook shapes of §4 and §5.
func TestLifecycleAndShapes(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{GrantChat: true})
	rcv := simtest.NewReceiver(t)
	c := simtest.Client(t, sim)
	ctx := natstest.Ctx(t)
	tests := []struct {
		modality, field, value string
		wantType               string
		wantCategories         []string
		prohibited             bool
		wantJobKeys            []string
		wantHookKeys           []string
	}{
		{"prompt", "prompt", "hello", "prompt", []string{"custom"}, false,
			[]string{"categories", "completed_at", "created_at", "is_prohibited", "job_id", "status", "type"},
			[]string{"categories", "completed_at", "is_prohibited", "job_id", "status"}},
		{"prompt", "prompt", "sim:reject", "prompt", []string{"custom"}, true,
			[]string{"categories", "completed_at", "created_at", "is_prohibited", "job_id", "reason", "status", "type"},
			[]string{"categories", "completed_at", "is_prohibited", "job_id", "reason", "status"}},
		{"chat", "prompt", "hi there", "chat", []string{"custom"}, false,
			[]string{"categories", "completed_at", "created_at", "is_prohibited", "job_id", "status", "type"},
			[]string{"categories", "completed_at", "is_prohibited", "job_id", "status"}},
		{"image", "image_url", "https://example.com/a.png", "image", []string{"ai_adult_general", "custom", "nsfw", "underage"}, false,
			[]string{"categories", "completed_at", "created_at", "is_prohibited", "job_id", "status", "type"},
			[]string{"categories", "completed_at", "is_prohibited", "job_id", "status"}},
		{"video", "video_url", "https://example.com/v.mp4?sim:reject", "video", []string{"ai_adult_general", "custom", "nsfw", "underage"}, true,
			[]string{"categories", "completed_at", "created_at", "is_prohibited", "job_id", "status", "type"},
			[]string{"categories", "completed_at", "is_prohibited", "job_id", "status"}},
	}
	for _, tt := range tests {
		t.Run(tt.modality+"/"+tt.value, func(t *testing.T) {
			s, err := c.Submit(ctx, tt.modality, map[string]string{tt.field: tt.value}, rcv.URL+"/webhook/"+tt.modality)
			if err != nil {
				t.Fatal(err)
			}
			j := waitTerminal(t, c, s.JobID)
			if j.Type != tt.wantType || j.Status != upstream.StatusCompleted || *j.IsProhibited != tt.prohibited || j.CompletedAt == nil {
				t.Fatalf("job %s", j.Raw)
			}
			if got := keys(j.Raw); !slices.Equal(got, tt.wantJobKeys) {
				t.Fatalf("job keys %v, want %v", got, tt.wantJobKeys)
			}
			var cats struct {
				Categories map[string]json.RawMessage `json:"categories"`
			}
			json.Unmarshal(j.Raw, &cats)
			if got := slices.Sorted(mapKeys(cats.Categories)); !slices.Equal(got, tt.wantCategories) || string(cats.Categories["custom"]) != "{}" {
				t.Fatalf("categories %v", cats.Categories)
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
			if hook.ContentType != "application/json" || hook.Path != "/webhook/"+tt.modality {
				t.Fatalf("webhook %s %s", hook.ContentType, hook.Path)
			}
			if got := keys(hook.Body); !slices.Equal(got, tt.wantHookKeys) {
				t.Fatalf("webhook keys %v, want %v: %s", got, tt.wantHookKeys, hook.Body)
			}
		})
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestPendingAndFailedShapes: is_prohibited and completed_at stay null until the end; a failed job has
// error_code and a null decision, and still sends its webhook.
func TestPendingAndFailedShapes(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{})
	rcv := simtest.NewReceiver(t)
	c := simtest.Client(t, sim)
	ctx := natstest.Ctx(t)
	s, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "sim:hold"}, rcv.URL)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		j, err := c.GetJob(ctx, s.JobID, upstream.ClassPoll)
		switch {
		case err != nil:
			return err
		case j.Status != upstream.StatusProcessing:
			return errors.New("status " + j.Status)
		case j.IsProhibited != nil || j.CompletedAt != nil:
			return fmt.Errorf("pending job has a decision: %s", j.Raw)
		}
		return nil
	})
	if err := sim.CompleteJob(s.JobID, simulator.Outcome{Failed: true, ErrorCode: "VIDEO_TOO_LARGE"}); err != nil {
		t.Fatal(err)
	}
	j := waitTerminal(t, c, s.JobID)
	if j.Status != upstream.StatusFailed || j.ErrorCode != "VIDEO_TOO_LARGE" || j.IsProhibited != nil || j.CompletedAt == nil {
		t.Fatalf("failed job %s", j.Raw)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if rcv.Len() != 1 {
			return errors.New("no webhook")
		}
		return nil
	})
	var body map[string]any
	json.Unmarshal(rcv.Received()[0].Body, &body)
	if body["status"] != "failed" || body["error_code"] != "VIDEO_TOO_LARGE" || body["is_prohibited"] != nil {
		t.Fatalf("failed webhook %v", body)
	}
	if err := sim.CompleteJob(s.JobID, simulator.Outcome{}); !errors.Is(err, simulator.ErrJobTerminal) {
		t.Fatalf("second CompleteJob = %v", err)
	}
	if err := sim.HoldJob("nope"); !errors.Is(err, simulator.ErrUnknownJob) {
		t.Fatalf("HoldJob(unknown) = %v", err)
	}
}

// TestHoldJob keeps one job processing while a later one completes.
func TestHoldJob(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{ProcessDelay: time.Hour})
	c := simtest.Client(t, sim)
	ctx := natstest.Ctx(t)
	held, _ := c.Submit(ctx, "prompt", map[string]string{"prompt": "a"}, "")
	if err := sim.HoldJob(held.JobID); err != nil {
		t.Fatal(err)
	}
	other, _ := c.Submit(ctx, "prompt", map[string]string{"prompt": "b"}, "")
	if err := sim.ReleaseJob(held.JobID); err != nil { // release, then hold again: still held
		t.Fatal(err)
	}
	if err := sim.HoldJob(held.JobID); err != nil {
		t.Fatal(err)
	}
	if err := sim.CompleteJob(other.JobID, simulator.Outcome{}); err != nil {
		t.Fatal(err)
	}
	waitTerminal(t, c, other.JobID)
	if j, _ := sim.Job(held.JobID); j.Status == "completed" || !j.Held {
		t.Fatalf("held job %+v", j)
	}
	if err := sim.CompleteJob(held.JobID, simulator.Outcome{Prohibited: true, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if j := waitTerminal(t, c, held.JobID); !*j.IsProhibited || !strings.Contains(string(j.Raw), `"reason":"test"`) {
		t.Fatalf("completed held job %s", j.Raw)
	}
}

// TestWebhookExactlyOnce: without faults every job's webhook arrives once, also when the receiver
// answers 500 (no retry).
func TestWebhookExactlyOnce(t *testing.T) {
	for _, status := range []int{200, 500} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1})
			rcv := simtest.NewReceiver(t)
			rcv.SetStatus(status)
			c := simtest.Client(t, sim)
			ctx := natstest.Ctx(t)
			const n = 100
			ids := map[string]bool{}
			for range n {
				s, err := c.Submit(ctx, "image", map[string]string{"image_url": "https://example.com/x.jpg"}, rcv.URL)
				if err != nil {
					t.Fatal(err)
				}
				ids[s.JobID] = true
			}
			natstest.WaitFor(t, 10*time.Second, func() error {
				if st := sim.Stats().Webhooks; st.Delivered+st.Failed != n {
					return fmt.Errorf("stats %+v", st)
				}
				return nil
			})
			got := map[string]int{}
			for _, r := range rcv.Received() {
				var b struct {
					JobID string `json:"job_id"`
				}
				json.Unmarshal(r.Body, &b)
				got[b.JobID]++
			}
			for id := range ids {
				if got[id] != 1 {
					t.Fatalf("job %s: %d webhooks", id, got[id])
				}
				w := sim.Webhooks(id)
				want := simulator.WebhookDelivered
				if status != 200 {
					want = simulator.WebhookFailed
				}
				if len(w) != 1 || w[0].Outcome != want || w[0].Status != status {
					t.Fatalf("job %s webhook record %+v", id, w)
				}
			}
			if len(got) != n {
				t.Fatalf("%d distinct jobs got webhooks, want %d", len(got), n)
			}
		})
	}
}

// TestFaultRatesSeeded: drop and duplicate rates land near their configured values for a fixed seed,
// and the same seed drops the same jobs (by submission order) again.
func TestFaultRatesSeeded(t *testing.T) {
	run := func() (dropped, duplicated []int, received int) {
		sim := simtest.Run(t, simulator.Config{Seed: 42, DropRate: 0.2, DuplicateRate: 0.1, QueueDelay: -1, ProcessDelay: -1})
		rcv := simtest.NewReceiver(t)
		c := simtest.Client(t, sim)
		ctx := natstest.Ctx(t)
		const n = 1000
		ids := make([]string, n)
		for i := range ids {
			s, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, rcv.URL)
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = s.JobID
		}
		natstest.WaitFor(t, 20*time.Second, func() error {
			st := sim.Stats().Webhooks
			if st.Delivered+st.Dropped != n || int64(rcv.Len()) != st.Delivered+st.Duplicated {
				return fmt.Errorf("stats %+v, received %d", st, rcv.Len())
			}
			return nil
		})
		for i, id := range ids {
			for _, w := range sim.Webhooks(id) {
				switch {
				case w.Outcome == simulator.WebhookDropped:
					dropped = append(dropped, i)
				case w.Duplicate:
					duplicated = append(duplicated, i)
				}
			}
		}
		return dropped, duplicated, rcv.Len()
	}
	d1, dup1, got := run()
	if len(d1) < 150 || len(d1) > 250 {
		t.Fatalf("%d of 1000 dropped, want about 200", len(d1))
	}
	// Duplicates are drawn independently of drops, but only sent for jobs not dropped: about 80.
	if len(dup1) < 50 || len(dup1) > 115 {
		t.Fatalf("%d of 1000 duplicated, want about 80", len(dup1))
	}
	if got != 1000-len(d1)+len(dup1) {
		t.Fatalf("receiver got %d, want %d", got, 1000-len(d1)+len(dup1))
	}
	d2, dup2, _ := run()
	if !slices.Equal(d1, d2) || !slices.Equal(dup1, dup2) {
		t.Fatal("same seed, different fates")
	}
}

// TestAuthAndValidation covers the simulator's own error answers through raw HTTP.
func TestAuthAndValidation(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{Keys: []simulator.Key{
		{Token: "k_a", Account: "a", Scopes: simulator.DefaultScopes},
		{Token: "k_noread", Account: "a", Scopes: []string{simulator.ScopePrompt}},
		{Token: "k_dead", Account: "d", Scopes: simulator.DefaultScopes, Terminated: true},
	}})
	base := sim.URL()
	tests := []struct {
		name, method, path, key, ctype, body string
		status                               int
		code                                 string
	}{
		{"no key", "GET", "/jobs", "", "", "", 401, "UNAUTHORIZED"},
		{"bad key", "GET", "/jobs", "nope", "", "", 401, "UNAUTHORIZED"},
		{"terminated", "GET", "/jobs", "k_dead", "", "", 403, "ACCOUNT_TERMINATED"},
		{"no job:read", "GET", "/jobs", "k_noread", "", "", 403, "FORBIDDEN"},
		{"no chat scope", "POST", "/moderate/chat", "k_a", urlencoded, form("prompt", "x"), 403, "FORBIDDEN"},
		{"unknown modality", "POST", "/moderate/audio", "k_a", urlencoded, form("audio", "x"), 404, "NOT_FOUND"},
		{"unknown job", "GET", "/job/1b4e28ba-2fa1-11d2-883f-0016d3cca427", "k_a", "", "", 404, "JOB_NOT_FOUND"},
		{"missing prompt", "POST", "/moderate/prompt", "k_a", urlencoded, form("text", "x"), 400, "INVALID_REQUEST"},
		{"json body", "POST", "/moderate/prompt", "k_a", "application/json", `{"prompt":"x"}`, 400, "INVALID_REQUEST"},
		{"ftp image", "POST", "/moderate/image", "k_a", urlencoded, form("image_url", "ftp://example.com/a.png"), 400, "INVALID_REQUEST"},
		{"loopback image", "POST", "/moderate/image", "k_a", urlencoded, form("image_url", "http://127.0.0.1/a.png"), 400, "INVALID_REQUEST"},
		{"localhost image", "POST", "/moderate/image", "k_a", urlencoded, form("image_url", "http://localhost:8080/a.png"), 400, "INVALID_REQUEST"},
		{"private image", "POST", "/moderate/image", "k_a", urlencoded, form("image_url", "https://192.168.1.2/a.png"), 400, "INVALID_REQUEST"},
		{"ipv6 loopback video", "POST", "/moderate/video", "k_a", urlencoded, form("video_url", "http://[::1]/v.mp4"), 400, "INVALID_REQUEST"},
		{"metadata video", "POST", "/moderate/video", "k_a", urlencoded, form("video_url", "http://169.254.169.254/v"), 400, "INVALID_REQUEST"},
		{"bad webhook", "POST", "/moderate/prompt", "k_a", urlencoded, form("prompt", "x", "webhook_url", "mailto:a@b"), 400, "INVALID_REQUEST"},
		{"public image", "POST", "/moderate/image", "k_a", urlencoded, form("image_url", "https://example.com/a.png"), 202, ""},
		{"loopback webhook ok", "POST", "/moderate/prompt", "k_a", urlencoded, form("prompt", "x", "webhook_url", "http://127.0.0.1:9/webhook"), 202, ""},
		{"bad status filter", "GET", "/jobs?status=queued,done", "k_a", "", "", 400, "INVALID_REQUEST"},
		{"limit over 100", "GET", "/jobs?limit=101", "k_a", "", "", 400, "INVALID_REQUEST"},
		{"bad from", "GET", "/jobs?from=yesterday", "k_a", "", "", 400, "INVALID_REQUEST"},
		{"bad decision", "GET", "/jobs?decision=maybe", "k_a", "", "", 400, "INVALID_REQUEST"},
		{"register", "POST", "/webhook/register", "k_a", "application/json", `{"url":"https://example.com/hook"}`, 200, ""},
		{"register bad", "POST", "/webhook/register", "k_a", "application/json", `{"url":"gopher://x"}`, 400, "INVALID_REQUEST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := do(t, tt.method, base+tt.path, tt.key, tt.ctype, tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %v", status, tt.status, body)
			}
			if tt.code != "" && (body["error"] != tt.code || body["statusCode"] != float64(tt.status) || body["message"] == "") {
				t.Fatalf("body %v, want error %s", body, tt.code)
			}
			if status == 202 && (body["status"] != "queued" || body["job_id"] == "") {
				t.Fatalf("submission answer %v", body)
			}
		})
	}

	// 402 toggles at run time.
	sim.SetPaymentRequired(true)
	if status, _, body := do(t, "POST", base+"/moderate/prompt", "k_a", urlencoded, form("prompt", "x")); status != 402 || body["error"] != "PAYMENT_REQUIRED" {
		t.Fatalf("402: %d %v", status, body)
	}
	sim.SetPaymentRequired(false)
	// Health and stats need no key.
	if status, _, body := do(t, "GET", strings.TrimSuffix(base, "/api/v1")+"/health", "", "", ""); status != 200 || body["status"] != "ok" {
		t.Fatalf("health: %d %v", status, body)
	}
	status, _, body := do(t, "GET", strings.TrimSuffix(base, "/api/v1")+"/_sim/stats", "", "", "")
	if calls, _ := body["calls"].(map[string]any); status != 200 || calls["submit"] == nil {
		t.Fatalf("stats: %d %v", status, body)
	}
}

// TestRegisteredWebhook: the account's global URL is used unless the job names its own.
func TestRegisteredWebhook(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1})
	global, own := simtest.NewReceiver(t), simtest.NewReceiver(t)
	status, _, _ := do(t, "POST", sim.URL()+"/webhook/register", simulator.DefaultKey, "application/json", `{"url":"`+global.URL+`/g"}`)
	if status != 200 {
		t.Fatalf("register: %d", status)
	}
	c := simtest.Client(t, sim)
	ctx := natstest.Ctx(t)
	c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "")
	c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, own.URL+"/o")
	natstest.WaitFor(t, 10*time.Second, func() error {
		if global.Len() != 1 || own.Len() != 1 {
			return fmt.Errorf("global %d, own %d", global.Len(), own.Len())
		}
		return nil
	})
}

// TestRateLimit: over the account's RPM the simulator answers 429 with Retry-After.
func TestRateLimit(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{RPM: 60, Burst: 2})
	var statuses []int
	var hdr http.Header
	var body map[string]any
	for range 3 {
		var st int
		st, hdr, body = do(t, "GET", sim.URL()+"/jobs", simulator.DefaultKey, "", "")
		statuses = append(statuses, st)
	}
	if !slices.Equal(statuses, []int{200, 200, 429}) {
		t.Fatalf("statuses %v", statuses)
	}
	if ra, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || ra < 1 || body["error"] != "RATE_LIMITED" {
		t.Fatalf("429 answer: Retry-After %q, body %v", hdr.Get("Retry-After"), body)
	}
	// The rejected call is recorded too.
	if calls := sim.Calls(simulator.EndpointJobs); len(calls) != 3 || calls[2].Status != 429 || calls[2].Account != simulator.DefaultAccount {
		t.Fatalf("calls %+v", calls)
	}
}

func TestLifecycleControls(t *testing.T) {
	sim, err := simulator.New(simulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if sim.URL() != "" {
		t.Fatal("URL before Start")
	}
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := sim.Start("127.0.0.1:0"); err == nil {
		t.Fatal("second Start succeeded")
	}
	if !strings.HasSuffix(sim.URL(), "/api/v1") {
		t.Fatalf("URL %q", sim.URL())
	}
	sim.Close()
	sim.Close()
	if err := sim.Start("127.0.0.1:0"); !errors.Is(err, simulator.ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}
	for _, cfg := range []simulator.Config{{DropRate: 2}, {RPM: -1}, {Keys: []simulator.Key{{Token: "x"}}},
		{Faults: map[string]simulator.Fault{"job": {ErrorStatus: 404}}}} {
		if _, err := simulator.New(cfg); !errors.Is(err, simulator.ErrInvalidConfig) {
			t.Fatalf("New(%+v) = %v", cfg, err)
		}
	}
}

// TestNeverFinish: a never-finishing job stays processing (while later jobs complete) until released.
func TestNeverFinish(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{NeverFinishRate: 1, QueueDelay: -1, ProcessDelay: -1})
	c := simtest.Client(t, sim)
	ctx := natstest.Ctx(t)
	s, _ := c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "")
	j, err := c.GetJob(ctx, s.JobID, upstream.ClassPoll)
	if err != nil || j.Status != upstream.StatusProcessing {
		t.Fatalf("job %s, %v", j.Raw, err)
	}
	if err := sim.ReleaseJob(s.JobID); err != nil {
		t.Fatal(err)
	}
	waitTerminal(t, c, s.JobID)
}

// TestDropMarkerLosesTheWebhook: a job marked sim:drop completes, but its webhook is never sent; it is
// recorded as dropped.
func TestDropMarkerLosesTheWebhook(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{})
	rcv := simtest.NewReceiver(t)
	c := simtest.Client(t, sim)
	s, err := c.Submit(natstest.Ctx(t), "prompt", map[string]string{"prompt": "sim:drop hello"}, rcv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if j := waitTerminal(t, c, s.JobID); j.Status != upstream.StatusCompleted {
		t.Fatalf("job %s", j.Raw)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if w := sim.Webhooks(s.JobID); len(w) != 1 || w[0].Outcome != simulator.WebhookDropped {
			return fmt.Errorf("webhooks %+v, want one dropped", w)
		}
		return nil
	})
	if rcv.Len() != 0 {
		t.Fatalf("%d webhooks received, want 0", rcv.Len())
	}
}
