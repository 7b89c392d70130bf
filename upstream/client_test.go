package upstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testlog"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/upstream/simulator"
)

func asError(t *testing.T, err error) *upstream.Error {
	t.Helper()
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		t.Fatalf("error %v (%T) is not *upstream.Error", err, err)
	}
	return ue
}

// TestErrorClasses drives every error class through a real simulator (or a real listener for the
// transport failures) and checks status, code, sentinel and retryability.
func TestErrorClasses(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{
		Keys: []simulator.Key{
			{Token: simulator.DefaultKey, Account: "a", Scopes: simulator.DefaultScopes},
			{Token: "other_account_key", Account: "b", Scopes: simulator.DefaultScopes},
			{Token: "terminated_key", Account: "c", Scopes: simulator.DefaultScopes, Terminated: true},
		},
		ProcessDelay: time.Hour,
	})
	ctx := natstest.Ctx(t)
	c := simtest.Client(t, sim)
	foreign, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "hi"}, "")
	if err != nil {
		t.Fatal(err)
	}

	// A listener that is closed again: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + ln.Addr().String() + "/api/v1"
	ln.Close()

	tests := []struct {
		name      string
		setup     func(t *testing.T)
		opts      []func(*upstream.Config)
		call      func(c *upstream.Client) error
		status    int
		code      string
		want      error
		retryable bool
	}{
		{name: "400 private image url",
			call: func(c *upstream.Client) error {
				_, err := c.Submit(ctx, "image", map[string]string{"image_url": "http://10.0.0.1/a.png"}, "")
				return err
			},
			status: 400, code: "INVALID_REQUEST", want: upstream.ErrInvalidRequest},
		{name: "400 missing field",
			call: func(c *upstream.Client) error {
				_, err := c.Submit(ctx, "prompt", map[string]string{"text": "x"}, "")
				return err
			},
			status: 400, code: "INVALID_REQUEST", want: upstream.ErrInvalidRequest},
		{name: "401 wrong key",
			opts: []func(*upstream.Config){func(c *upstream.Config) { c.APIKey = "wrong_key" }},
			call: func(c *upstream.Client) error {
				_, err := c.GetJob(ctx, foreign.JobID, upstream.ClassVerify)
				return err
			},
			status: 401, code: "UNAUTHORIZED", want: upstream.ErrUnauthorized},
		{name: "402 no credit",
			setup: func(t *testing.T) {
				sim.SetPaymentRequired(true)
				t.Cleanup(func() { sim.SetPaymentRequired(false) })
			},
			call: func(c *upstream.Client) error {
				_, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "")
				return err
			},
			status: 402, code: "PAYMENT_REQUIRED", want: upstream.ErrPaymentRequired},
		{name: "403 chat scope missing",
			call: func(c *upstream.Client) error {
				_, err := c.Submit(ctx, "chat", map[string]string{"prompt": "x"}, "")
				return err
			},
			status: 403, code: "FORBIDDEN", want: upstream.ErrForbidden},
		{name: "403 account terminated",
			opts:   []func(*upstream.Config){func(c *upstream.Config) { c.APIKey = "terminated_key" }},
			call:   func(c *upstream.Client) error { _, err := c.ListJobs(ctx, upstream.ListFilter{}); return err },
			status: 403, code: "ACCOUNT_TERMINATED", want: upstream.ErrAccountTerminated},
		{name: "404 unknown job",
			call: func(c *upstream.Client) error {
				_, err := c.GetJob(ctx, "00000000-0000-4000-8000-000000000000", upstream.ClassVerify)
				return err
			},
			status: 404, code: "JOB_NOT_FOUND", want: upstream.ErrNotFound},
		{name: "404 other account's job",
			opts: []func(*upstream.Config){func(c *upstream.Config) { c.APIKey = "other_account_key" }},
			call: func(c *upstream.Client) error {
				_, err := c.GetJob(ctx, foreign.JobID, upstream.ClassVerify)
				return err
			},
			status: 404, code: "JOB_NOT_FOUND", want: upstream.ErrNotFound},
		{name: "429 injected",
			setup: func(t *testing.T) {
				sim.SetFault(simulator.EndpointJob, simulator.Fault{RateLimitRate: 1, RetryAfter: 3 * time.Second})
				t.Cleanup(func() { sim.SetFault(simulator.EndpointJob, simulator.Fault{}) })
			},
			call: func(c *upstream.Client) error {
				_, err := c.GetJob(ctx, foreign.JobID, upstream.ClassVerify)
				return err
			},
			status: 429, code: "RATE_LIMITED", want: upstream.ErrRateLimited, retryable: true},
		{name: "503 injected",
			setup: func(t *testing.T) {
				sim.SetFault(simulator.EndpointAll, simulator.Fault{ErrorRate: 1})
				t.Cleanup(func() { sim.SetFault(simulator.EndpointAll, simulator.Fault{}) })
			},
			call:   func(c *upstream.Client) error { _, err := c.ListJobs(ctx, upstream.ListFilter{}); return err },
			status: 503, code: "SERVICE_UNAVAILABLE", want: upstream.ErrUnavailable, retryable: true},
		{name: "500 injected",
			setup: func(t *testing.T) {
				sim.SetFault(simulator.EndpointSubmit, simulator.Fault{ErrorRate: 1, ErrorStatus: 500})
				t.Cleanup(func() { sim.SetFault(simulator.EndpointSubmit, simulator.Fault{}) })
			},
			call: func(c *upstream.Client) error {
				_, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "")
				return err
			},
			status: 500, code: "INTERNAL_ERROR", want: upstream.ErrUnavailable, retryable: true},
		{name: "timeout",
			setup: func(t *testing.T) {
				sim.SetFault(simulator.EndpointJob, simulator.Fault{Latency: time.Minute})
				t.Cleanup(func() { sim.SetFault(simulator.EndpointJob, simulator.Fault{}) })
			},
			opts: []func(*upstream.Config){func(c *upstream.Config) { c.Timeout = 50 * time.Millisecond }},
			call: func(c *upstream.Client) error {
				_, err := c.GetJob(ctx, foreign.JobID, upstream.ClassVerify)
				return err
			},
			status: 0, code: upstream.CodeTimeout, want: upstream.ErrTimeout, retryable: true},
		{name: "connection refused",
			opts: []func(*upstream.Config){func(c *upstream.Config) { c.BaseURL = deadURL }},
			call: func(c *upstream.Client) error {
				_, err := c.GetJob(ctx, foreign.JobID, upstream.ClassVerify)
				return err
			},
			status: 0, code: upstream.CodeConnection, want: upstream.ErrConnection, retryable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup(t)
			}
			err := tt.call(simtest.Client(t, sim, tt.opts...))
			ue := asError(t, err)
			if ue.Status != tt.status || ue.Code != tt.code {
				t.Fatalf("got %d %q, want %d %q (%v)", ue.Status, ue.Code, tt.status, tt.code, err)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tt.want)
			}
			if ue.Retryable() != tt.retryable {
				t.Fatalf("Retryable() = %v, want %v", ue.Retryable(), tt.retryable)
			}
			if ue.Endpoint == "" {
				t.Fatal("no Endpoint")
			}
			if tt.status == 429 && ue.RetryAfter < 3*time.Second {
				t.Fatalf("RetryAfter %v, want the simulator's 3s", ue.RetryAfter)
			}
		})
	}
}

// TestSubmissionStatusUnknown: the newer contract's 503 SUBMISSION_STATUS_UNKNOWN returns both the job
// id and an error that is not retryable.
func TestSubmissionStatusUnknown(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{Faults: map[string]simulator.Fault{
		simulator.EndpointSubmit: {StatusUnknownRate: 1},
	}})
	s, err := simtest.Client(t, sim).Submit(natstest.Ctx(t), "prompt", map[string]string{"prompt": "x"}, "")
	if !errors.Is(err, upstream.ErrStatusUnknown) || !errors.Is(err, upstream.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrStatusUnknown", err)
	}
	if asError(t, err).Retryable() {
		t.Fatal("status-unknown submission must not be retryable")
	}
	if !s.StatusUnknown || s.JobID == "" {
		t.Fatalf("submission = %+v, want StatusUnknown with a job id", s)
	}
	if _, ok := sim.Job(s.JobID); !ok {
		t.Fatal("job of the uncertain submission does not exist in the simulator")
	}
}

// TestUndocumentedAnswers: non-JSON error bodies and garbage 2xx bodies are tolerated and classified.
func TestUndocumentedAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/v1/job/proxy"):
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>Bad Gateway</html>")
		case strings.HasPrefix(r.URL.Path, "/api/v1/job/garbage"):
			io.WriteString(w, "not json")
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"job_id":"someone-else","status":"queued"}`)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := upstream.New(upstream.Config{BaseURL: srv.URL + "/api/v1", APIKey: "k", Limiter: budget.Unlimited{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Ctx(t)

	_, err = c.GetJob(ctx, "proxy", upstream.ClassPoll)
	if ue := asError(t, err); ue.Status != 502 || ue.Code != "" || !strings.Contains(ue.Message, "Bad Gateway") || !ue.Retryable() {
		t.Fatalf("proxy answer: %+v", ue)
	}
	_, err = c.GetJob(ctx, "garbage", upstream.ClassPoll)
	if !errors.Is(err, upstream.ErrBadResponse) || !asError(t, err).Retryable() {
		t.Fatalf("garbage answer: %v", err)
	}
	_, err = c.GetJob(ctx, "mine", upstream.ClassPoll)
	if !errors.Is(err, upstream.ErrBadResponse) {
		t.Fatalf("mismatched job id: %v", err)
	}
}

// TestSubmitFormCarriesExactlyTheFields captures the multipart body in a handler.
func TestSubmitFormCarriesExactlyTheFields(t *testing.T) {
	type captured struct {
		path, auth string
		fields     map[string][]string
	}
	got := make(chan captured, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/form-data" {
			http.Error(w, "not multipart", 400)
			return
		}
		form, err := multipart.NewReader(r.Body, params["boundary"]).ReadForm(1 << 20)
		if err != nil || len(form.File) != 0 {
			http.Error(w, "bad form", 400)
			return
		}
		got <- captured{r.URL.Path, r.Header.Get("Authorization"), form.Value}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"job_id":"5f0c6e3a-0000-4000-8000-000000000001","status":"queued"}`)
	}))
	t.Cleanup(srv.Close)
	c, err := upstream.New(upstream.Config{BaseURL: srv.URL + "/api/v1/", APIKey: "key123", Limiter: budget.Unlimited{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Ctx(t)
	tests := []struct {
		name     string
		modality string
		fields   map[string]string
		webhook  string
		want     map[string][]string
	}{
		{"with webhook", "prompt", map[string]string{"prompt": "hello", "extra": "1"}, "https://bridge.example/webhook/prompt",
			map[string][]string{"prompt": {"hello"}, "extra": {"1"}, "webhook_url": {"https://bridge.example/webhook/prompt"}}},
		{"without webhook", "image", map[string]string{"image_url": "https://example.com/a.png"}, "",
			map[string][]string{"image_url": {"https://example.com/a.png"}}},
		{"webhook argument replaces field", "video", map[string]string{"video_url": "https://e.com/v.mp4", "webhook_url": "https://old"}, "https://new",
			map[string][]string{"video_url": {"https://e.com/v.mp4"}, "webhook_url": {"https://new"}}},
		{"unknown modality passes through", "text", map[string]string{"text": "newer contract"}, "",
			map[string][]string{"text": {"newer contract"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := c.Submit(ctx, tt.modality, tt.fields, tt.webhook)
			if err != nil || s.JobID == "" || s.Status != upstream.StatusQueued {
				t.Fatalf("Submit = %+v, %v", s, err)
			}
			cp := <-got
			if cp.path != "/api/v1/moderate/"+tt.modality {
				t.Fatalf("path %q", cp.path)
			}
			if cp.auth != "Bearer key123" {
				t.Fatalf("Authorization %q", cp.auth)
			}
			if !equalForm(cp.fields, tt.want) {
				t.Fatalf("form %v, want %v", cp.fields, tt.want)
			}
		})
	}
}

func equalForm(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestNewerContract: an unknown modality passes through to the simulator, and unknown fields of the job
// survive in Raw byte for byte.
func TestNewerContract(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{
		Modalities:   map[string]string{"prompt": "prompt", "text": "text"},
		ExtraFields:  map[string]any{"api_key_id": "key_1", "nested": map[string]any{"a": 1}},
		QueueDelay:   -1,
		ProcessDelay: -1,
	})
	ctx := natstest.Ctx(t)
	c := simtest.Client(t, sim)
	s, err := c.Submit(ctx, "text", map[string]string{"text": "hello"}, "")
	if err != nil {
		t.Fatal(err)
	}
	var j upstream.Job
	natstest.WaitFor(t, 10*time.Second, func() error {
		j, err = c.GetJob(ctx, s.JobID, upstream.ClassVerify)
		if err == nil && !j.Terminal() {
			err = errors.New("status " + j.Status)
		}
		return err
	})
	if j.Type != "text" || j.Status != upstream.StatusCompleted || j.IsProhibited == nil || j.CompletedAt == nil {
		t.Fatalf("job %+v", j)
	}
	// Raw is what the upstream sent, exactly.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sim.URL()+"/job/"+s.JobID, nil)
	req.Header.Set("Authorization", "Bearer "+simulator.DefaultKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	direct, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(j.Raw, direct) {
		t.Fatalf("Raw %s\nwant %s", j.Raw, direct)
	}
	var m map[string]any
	if err := json.Unmarshal(j.Raw, &m); err != nil || m["api_key_id"] != "key_1" || m["nested"] == nil {
		t.Fatalf("unknown fields lost: %s", j.Raw)
	}
}

// TestKeyNeverLogged runs calls that fail in every way with debug logs captured and greps for the key.
func TestKeyNeverLogged(t *testing.T) {
	const key, wrong = "sk_live_SECRET_abc123", "sk_live_WRONG_def456"
	sim := simtest.Run(t, simulator.Config{Keys: []simulator.Key{{Token: key, Account: "a", Scopes: simulator.DefaultScopes}}})
	var buf testlog.Buffer
	ctx := natstest.Ctx(t)
	var errs []error
	for _, k := range []string{key, wrong} {
		c := simtest.Client(t, sim, func(c *upstream.Config) {
			c.APIKey = k
			c.Log = zerolog.New(&buf).Level(zerolog.DebugLevel)
			c.Timeout = 50 * time.Millisecond
		})
		_, err := c.Submit(ctx, "image", map[string]string{"image_url": "ftp://x"}, "")
		errs = append(errs, err)
		_, err = c.GetJob(ctx, "nope", upstream.ClassVerify)
		errs = append(errs, err)
		sim.SetFault(simulator.EndpointJobs, simulator.Fault{RateLimitRate: 1})
		_, err = c.ListJobs(ctx, upstream.ListFilter{})
		errs = append(errs, err)
		sim.SetFault(simulator.EndpointJobs, simulator.Fault{Latency: time.Minute})
		_, err = c.InFlight(ctx)
		errs = append(errs, err)
		sim.SetFault(simulator.EndpointJobs, simulator.Fault{})
	}
	_, err := upstream.New(upstream.Config{BaseURL: "ftp://x", APIKey: key})
	errs = append(errs, err)
	for _, err := range errs {
		if err == nil {
			t.Fatal("expected every call to fail")
		}
		if s := err.Error(); strings.Contains(s, key) || strings.Contains(s, wrong) || strings.Contains(s, "SECRET") {
			t.Fatalf("key in error: %s", s)
		}
	}
	if buf.String() == "" {
		t.Fatal("nothing logged")
	}
	if s := buf.String(); strings.Contains(s, key) || strings.Contains(s, wrong) {
		t.Fatalf("key in logs: %s", s)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  upstream.Config
		want string
	}{
		{"no url", upstream.Config{APIKey: "k"}, "BaseURL"},
		{"bad scheme", upstream.Config{BaseURL: "ftp://x", APIKey: "k"}, "BaseURL"},
		{"credentials in url", upstream.Config{BaseURL: "https://u:p@x", APIKey: "k"}, "BaseURL"},
		{"no key", upstream.Config{BaseURL: "https://x/api/v1"}, "APIKey"},
		{"bad timeout", upstream.Config{BaseURL: "https://x/api/v1", APIKey: "k", Timeout: -1}, "Timeout"},
		{"no limiter", upstream.Config{BaseURL: "https://x/api/v1", APIKey: "k"}, "Limiter"},
		{"bad export bound", upstream.Config{BaseURL: "https://x/api/v1", APIKey: "k", MaxExportBytes: -1}, "MaxExportBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := upstream.New(tt.cfg)
			if !errors.Is(err, upstream.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalidConfig naming %s", err, tt.want)
			}
		})
	}
}

// TestListAndInFlight checks filters and that InFlight pages past 100 jobs, also when jobs finish.
func TestListAndInFlight(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{QueueDelay: -1, ProcessDelay: -1})
	ctx := natstest.Ctx(t)
	c := simtest.Client(t, sim)
	sim.SetHoldNew(true)
	var ids []string
	for range 250 {
		s, err := c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.JobID)
	}
	sim.SetHoldNew(false)
	for _, id := range ids[:30] {
		if err := sim.CompleteJob(id, simulator.Outcome{Prohibited: true}); err != nil {
			t.Fatal(err)
		}
	}
	before := sim.CallCount(simulator.EndpointJobs)
	in, err := c.InFlight(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 220 {
		t.Fatalf("InFlight found %d jobs, want 220", len(in))
	}
	for _, id := range ids[30:] {
		if _, ok := in[id]; !ok {
			t.Fatalf("in-flight job %s missing", id)
		}
	}
	if n := sim.CallCount(simulator.EndpointJobs) - before; n != 3 {
		t.Fatalf("InFlight made %d list calls, want 3", n)
	}

	l, err := c.ListJobs(ctx, upstream.ListFilter{Decision: "reject", Limit: 10, Offset: 5})
	if err != nil || l.Total != 30 || len(l.Jobs) != 10 || l.Offset != 5 || l.Limit != 10 {
		t.Fatalf("reject page: total %d len %d offset %d, err %v", l.Total, len(l.Jobs), l.Offset, err)
	}
	// Newest first: ids[24] is the 6th newest of the first 30.
	if l.Jobs[0].JobID != ids[24] || len(l.Jobs[0].Raw) == 0 {
		t.Fatalf("first item %s, want %s", l.Jobs[0].JobID, ids[24])
	}
	l, err = c.ListJobs(ctx, upstream.ListFilter{Search: ids[0][:8], Type: "prompt", Status: []string{upstream.StatusCompleted}})
	if err != nil || l.Total < 1 {
		t.Fatalf("search: %+v %v", l, err)
	}
	for _, f := range []upstream.ListFilter{{Limit: 101}, {Status: []string{"done"}}, {Type: "movie"}} {
		if _, err := c.ListJobs(ctx, f); !errors.Is(err, upstream.ErrInvalidRequest) {
			t.Fatalf("ListJobs(%+v) = %v, want ErrInvalidRequest", f, err)
		}
	}
}

func TestMetrics(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{})
	reg := prometheus.NewRegistry()
	c := simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.Metrics = reg })
	_ = simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.Metrics = reg }) // a second client shares the series
	ctx := natstest.Ctx(t)
	c.GetJob(ctx, "missing", upstream.ClassVerify)
	sim.SetFault(simulator.EndpointJob, simulator.Fault{RateLimitRate: 1})
	c.GetJob(ctx, "missing", upstream.ClassVerify)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[key] = m.Counter.GetValue()
			case m.Histogram != nil:
				got[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	for key, want := range map[string]float64{
		"bridge_upstream_calls_total,endpoint=GET /job/{id},outcome=JOB_NOT_FOUND": 1,
		"bridge_upstream_calls_total,endpoint=GET /job/{id},outcome=RATE_LIMITED":  1,
		"bridge_upstream_rate_limited_total":                                       1,
		"bridge_upstream_call_duration_seconds,endpoint=GET /job/{id}":             2,
		"bridge_upstream_budget_wait_seconds,class=verify":                         2,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v (have %v)", key, got[key], want, got)
		}
	}
}

// grantLimiter holds every call until the test grants it, and records how long it held each.
type grantLimiter struct {
	entered chan struct{}
	grant   chan struct{}
	mu      sync.Mutex
	held    []time.Duration
}

func (g *grantLimiter) Wait(ctx context.Context, _ upstream.Class) error {
	start := time.Now()
	g.entered <- struct{}{}
	select {
	case <-g.grant:
	case <-ctx.Done():
		return ctx.Err()
	}
	g.mu.Lock()
	g.held = append(g.held, time.Since(start))
	g.mu.Unlock()
	return nil
}
func (g *grantLimiter) RateLimited(time.Duration) time.Duration { return 0 }
func (g *grantLimiter) Succeeded()                              {}

// TestFetchJobReportsTheWait: FetchJob reports at least as long a wait for the budget as the limiter held
// the call, also when the call then fails.
func TestFetchJobReportsTheWait(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{ProcessDelay: time.Hour})
	gl := &grantLimiter{entered: make(chan struct{}, 2), grant: make(chan struct{})}
	c := simtest.Client(t, sim, func(cfg *upstream.Config) { cfg.Limiter = gl })
	ctx := natstest.Ctx(t)
	// granted makes call while the test grants the limiter's wait, and waits for it.
	granted := func(call func()) {
		done := make(chan struct{})
		go func() { defer close(done); call() }()
		natstest.RecvWithin(t, gl.entered, 10*time.Second)
		gl.grant <- struct{}{}
		natstest.RecvWithin(t, done, 10*time.Second)
	}
	var s upstream.Submission
	var err error
	granted(func() { s, err = c.Submit(ctx, "prompt", map[string]string{"prompt": "x"}, "") })
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range []struct {
		id      string
		wantErr error
	}{{s.JobID, nil}, {"missing", upstream.ErrNotFound}} {
		var f upstream.Fetched
		granted(func() { f, err = c.FetchJob(ctx, tt.id, upstream.ClassVerify) })
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && f.Job.JobID != tt.id) {
			t.Fatalf("FetchJob(%s) = %+v, %v; want error %v", tt.id, f.Job, err, tt.wantErr)
		}
		gl.mu.Lock()
		held := gl.held[i+1]
		gl.mu.Unlock()
		if f.BudgetWait <= 0 || f.BudgetWait < held {
			t.Fatalf("FetchJob(%s): budget wait %v, want at least the %v the limiter held the call", tt.id, f.BudgetWait, held)
		}
	}
}
