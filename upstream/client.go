package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/text"
)

// maxBody bounds what the client reads of any answer; a page of 100 jobs is some tens of KiB.
const maxBody = 8 << 20

// Client is the budgeted upstream client. Every method is safe for concurrent use, waits for the budget
// (honouring ctx), and returns *Error for any failure the upstream or the transport caused. Each role
// declares the few of its calls it makes.
type Client struct {
	cfg Config
	// decided is the contract in force: decidedV1, decidedV2, or undecided (auto, before the upstream
	// answered a submission).
	decided atomic.Int32
	// inFlight counts exchanges sent and not yet answered, reported to a [HeaderObserver].
	inFlight atomic.Int32
	auth     string // "Bearer <key>", only ever put in the Authorization header
	limiter  Limiter
	m        *metrics
	log      zerolog.Logger
}

// New returns a client for cfg, with defaults applied.
func New(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("upstream metrics: %w", err)
	}
	c := &Client{
		cfg:     cfg,
		auth:    "Bearer " + cfg.APIKey,
		limiter: cfg.Limiter,
		m:       m,
		log:     cfg.Log.With().Str("component", "upstream").Logger(),
	}
	switch cfg.Contract {
	case ContractV1:
		c.decided.Store(decidedV1)
	case ContractV2:
		c.decided.Store(decidedV2)
	}
	return c, nil
}

// Submit posts fields as multipart/form-data to the upstream's endpoint for modality at [ClassSubmit],
// plus webhook_url when webhookURL is non-empty (it then replaces a webhook_url in fields). The modality
// and fields are routed by the contract ([RouteFor]): under v2, prompt and chat go to /moderate/text with
// the field text, and media fields take their v2 names; under v1 everything goes as given. Submission.Endpoint is the path used. The
// request is sent once and never retried by the client, with one exception under [ContractAuto]: a 404
// or 410 on a retired v1 path (prompt, chat) created no job, so the client switches to v2, logs it, and
// sends the submission again to /moderate/text. An auto client that has not decided yet first probes
// before any other modality (see probe), so no submission goes out under the wrong field names.
//
// On 503 SUBMISSION_STATUS_UNKNOWN carrying a job_id it returns both Submission{JobID, StatusUnknown:
// true} and an *Error matching [ErrStatusUnknown]: the job may exist, so poll it before resubmitting.
// When the Limiter refuses the submission (it has no request free for it soon), it returns the Limiter's
// *[BusyError] without calling the upstream. Any other failure returns a zero Submission and an *Error
// (or a ctx error while waiting for budget).
func (c *Client) Submit(ctx context.Context, modality string, fields map[string]string, webhookURL string) (Submission, error) {
	if modality == "" || strings.ContainsAny(modality, "/?#") {
		return Submission{}, fmt.Errorf("%w: modality %q", ErrInvalidArgument, modality)
	}
	cur := c.decided.Load()
	if cur == undecided && !retiredV1[modality] {
		if err := c.probe(ctx); err != nil {
			return Submission{}, err
		}
		cur = c.decided.Load()
	}
	contract := ContractV1 // an undecided client sends the v1 form of a retired path: its answer decides
	if cur == decidedV2 {
		contract = ContractV2
	}
	sub := submission{modality: modality, fields: fields, webhookURL: webhookURL}
	s, err := c.submitAs(ctx, contract, sub)
	if c.cfg.Contract != ContractAuto || contract != ContractV1 || !retiredV1[modality] {
		return s, err
	}
	switch {
	case gone(err):
		// The path is retired: no job was created. This account is on the newer contract.
		ue, _ := errors.AsType[*Error](err)
		c.decide(decidedV2, fmt.Sprintf("/moderate/%s answered %d", modality, ue.Status))
		return c.submitAs(ctx, ContractV2, sub)
	case err == nil || errors.Is(err, ErrStatusUnknown):
		if cur == undecided {
			c.decide(decidedV1, "/moderate/"+modality+" took a submission")
		}
	}
	return s, err
}

// submission is what [Client.Submit] sends, before it is routed for a contract.
type submission struct {
	modality   string
	fields     map[string]string
	webhookURL string
}

// submitAs sends one submission routed for contract.
func (c *Client) submitAs(ctx context.Context, contract string, sub submission) (Submission, error) {
	route, err := RouteFor(contract, sub.modality, sub.fields)
	if err != nil {
		return Submission{}, err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, k := range slices.Sorted(maps.Keys(route.Fields)) {
		if k == "webhook_url" && sub.webhookURL != "" {
			continue
		}
		if err := mw.WriteField(k, route.Fields[k]); err != nil {
			return Submission{}, fmt.Errorf("upstream: encode form: %w", err)
		}
	}
	if sub.webhookURL != "" {
		if err := mw.WriteField("webhook_url", sub.webhookURL); err != nil {
			return Submission{}, fmt.Errorf("upstream: encode form: %w", err)
		}
	}
	if err := mw.Close(); err != nil {
		return Submission{}, fmt.Errorf("upstream: encode form: %w", err)
	}

	path := "/moderate/" + url.PathEscape(route.Modality)
	s := Submission{Endpoint: path}
	_, err = c.do(ctx, request{class: ClassSubmit, ep: "POST /moderate/" + route.Modality, method: http.MethodPost,
		path: path, body: &body, ctype: mw.FormDataContentType(), decode: func(res []byte) error {
			if err := json.Unmarshal(res, &s); err != nil || s.JobID == "" {
				return fmt.Errorf("no job_id in %q", text.Truncate(string(res), 200))
			}
			s.JobID = strings.ToLower(s.JobID)
			return nil
		}})
	if err != nil {
		var ue *Error
		if errors.As(err, &ue) && ue.Code == CodeStatusUnknown && ue.JobID != "" {
			return Submission{JobID: ue.JobID, StatusUnknown: true, Endpoint: path}, err
		}
		return Submission{}, err
	}
	if s.Status == "" {
		s.Status = StatusQueued // the documented 202 example omits it
	}
	return s, nil
}

// GetJob fetches GET /job/{id} at the given class. The job's Raw is the object as returned. A 404
// (unknown job, or another account's) is an *Error matching [ErrNotFound].
func (c *Client) GetJob(ctx context.Context, id string, class Class) (Job, error) {
	f, err := c.FetchJob(ctx, id, class)
	return f.Job, err
}

// Fetched is a job as GET /job/{id} returned it, and how long the call waited for the budget.
type Fetched struct {
	Job Job
	// BudgetWait is how long the call waited for the Limiter before it went out; it is set whenever the
	// call went out, also when it then failed.
	BudgetWait time.Duration
}

// FetchJob is [Client.GetJob] that also tells how long the call waited for the budget.
func (c *Client) FetchJob(ctx context.Context, id string, class Class) (Fetched, error) {
	if id == "" {
		return Fetched{}, fmt.Errorf("%w: empty job id", ErrInvalidArgument)
	}
	var j Job
	waited, err := c.do(ctx, request{class: class, ep: "GET /job/{id}", method: http.MethodGet, path: "/job/" + url.PathEscape(id),
		decode: func(res []byte) error {
			var err error
			if j, err = decodeJob(res); err == nil && !strings.EqualFold(j.JobID, id) {
				err = fmt.Errorf("job_id %q, want %q", j.JobID, id)
			}
			return err
		}})
	if err != nil {
		var ue *Error
		if errors.As(err, &ue) {
			ue.JobID = id
		}
		return Fetched{BudgetWait: waited}, err
	}
	return Fetched{Job: j, BudgetWait: waited}, nil
}

// RegisterWebhook sets the account-wide webhook URL with POST /webhook/register: every job submitted
// without a webhook_url of its own, from anywhere on the account, then reports to it. It spends one
// request at [ClassPoll] and is never retried.
func (c *Client) RegisterWebhook(ctx context.Context, webhookURL string) error {
	body, err := json.Marshal(map[string]string{"url": webhookURL})
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{class: ClassPoll, ep: "POST /webhook/register", method: http.MethodPost,
		path: "/webhook/register", body: bytes.NewReader(body), ctype: "application/json"})
	return err
}

// ListJobs fetches one page of GET /jobs at [ClassPoll]. Each job's Raw is the item as returned.
func (c *Client) ListJobs(ctx context.Context, f ListFilter) (JobList, error) {
	q := url.Values{}
	if len(f.Status) > 0 {
		q.Set("status", strings.Join(f.Status, ","))
	}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("type", f.Type)
	set("decision", f.Decision)
	set("search", f.Search)
	if !f.From.IsZero() {
		q.Set("from", f.From.UTC().Format(time.RFC3339Nano))
	}
	if !f.To.IsZero() {
		q.Set("to", f.To.UTC().Format(time.RFC3339Nano))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Offset > 0 {
		q.Set("offset", strconv.Itoa(f.Offset))
	}
	path := "/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var l JobList
	_, err := c.do(ctx, request{class: ClassPoll, ep: "GET /jobs", method: http.MethodGet, path: path, decode: func(res []byte) error {
		var page struct {
			Jobs   []json.RawMessage `json:"jobs"`
			Total  int               `json:"total"`
			Limit  int               `json:"limit"`
			Offset int               `json:"offset"`
		}
		if err := json.Unmarshal(res, &page); err != nil {
			return err
		}
		l = JobList{Jobs: make([]Job, 0, len(page.Jobs)), Total: page.Total, Limit: page.Limit, Offset: page.Offset}
		for _, raw := range page.Jobs {
			j, err := decodeJob(raw)
			if err != nil {
				return err
			}
			l.Jobs = append(l.Jobs, j)
		}
		return nil
	}})
	if err != nil {
		return JobList{}, err
	}
	return l, nil
}

// InFlight returns the ids of every queued or processing job, paging GET /jobs [InFlightPage] at a time at
// [ClassPoll].
//
// Pages after the first are windows of created_at (to = oldest seen + 1 s, offset = jobs of that
// window already seen), so a job that finishes while InFlight pages cannot shift unseen jobs past it,
// as plain offsets would on a newest-first list. Jobs created meanwhile may be missed (the next sweep
// sees them); none is reported twice.
func (c *Client) InFlight(ctx context.Context) (map[string]struct{}, error) {
	jobs, err := c.InFlightJobs(ctx)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]struct{}, len(jobs))
	for id := range jobs {
		ids[id] = struct{}{}
	}
	return ids, nil
}

// InFlightJobs is InFlight with each job's list item (type, created_at, status), keyed by id.
func (c *Client) InFlightJobs(ctx context.Context) (map[string]Job, error) {
	const limit, maxPages = InFlightPage, 10_000
	ids := make(map[string]Job)
	var seen []time.Time // created_at of the jobs seen, parsed; nil once one is unparseable
	keyset := true
	f := ListFilter{Status: []string{StatusQueued, StatusProcessing}, Limit: limit}
	for range maxPages {
		l, err := c.ListJobs(ctx, f)
		if err != nil {
			return nil, err
		}
		oldest := time.Time{}
		for _, j := range l.Jobs {
			ids[j.JobID] = j
			t, err := time.Parse(time.RFC3339Nano, j.CreatedAt)
			if err != nil {
				keyset = false
				continue
			}
			seen = append(seen, t)
			if oldest.IsZero() || t.Before(oldest) {
				oldest = t
			}
		}
		if len(l.Jobs) < limit {
			return ids, nil
		}
		if !keyset {
			f.Offset += len(l.Jobs)
			continue
		}
		f.To = oldest.Add(time.Second)
		f.Offset = 0
		for _, t := range seen {
			if !t.Before(oldest) && t.Before(f.To) {
				f.Offset++
			}
		}
	}
	return nil, fmt.Errorf("upstream: in-flight list longer than %d pages", maxPages)
}

// request is one upstream call: its budget class, the endpoint that labels its metrics and logs, the
// HTTP request, and what decodes the body of a 2xx answer (nil: the body is not read for anything).
type request struct {
	class        Class
	ep           string // e.g. "GET /job/{id}"
	method, path string
	body         io.Reader
	ctype        string
	decode       func([]byte) error
}

// do runs one budgeted call and hands the body of a 2xx answer to r.decode. It returns how long the call
// waited for the budget. Failures are *Error, except a ctx that ends while waiting for budget.
func (c *Client) do(ctx context.Context, r request) (waited time.Duration, err error) {
	waitStart := time.Now()
	if err := c.limiter.Wait(ctx, r.class); err != nil {
		if errors.Is(err, ErrBusy) {
			c.m.busy.Inc()
			return 0, err
		}
		return 0, fmt.Errorf("upstream: %s: wait for budget: %w", r.ep, err)
	}
	waited = time.Since(waitStart)
	c.m.wait.WithLabelValues(r.class.String()).Observe(waited.Seconds())

	start := time.Now()
	c.inFlight.Add(1)
	status, hdr, res, err := c.exchange(ctx, r)
	others := int(c.inFlight.Add(-1))
	if obs, ok := c.limiter.(HeaderObserver); ok && err == nil {
		if rl, ok := parseRateLimit(hdr, time.Now()); ok {
			rl.InFlight = others
			obs.ObserveLimit(rl)
		}
	}
	var ue *Error
	switch {
	case err != nil:
		ue = transportError(ctx, r.ep, err)
	case status == http.StatusTooManyRequests:
		c.m.rateLimited.Inc()
		ue = httpError(r.ep, status, hdr, res)
		ue.RetryAfter = c.limiter.RateLimited(retryHint(hdr, time.Now()))
		c.log.Warn().Str("endpoint", r.ep).Dur("pause", ue.RetryAfter).Msg("upstream rate limit: pausing all calls")
	case status < 200 || status > 299:
		c.limiter.Succeeded() // any answer but 429 means the rate is acceptable
		ue = httpError(r.ep, status, hdr, res)
	default:
		c.limiter.Succeeded()
		if r.decode != nil {
			if err := r.decode(res); err != nil {
				ue = &Error{Status: status, Code: CodeBadResponse, Endpoint: r.ep, Err: err}
			}
		}
	}
	took := time.Since(start)
	c.m.calls.WithLabelValues(r.ep, outcome(ue)).Inc()
	c.m.latency.WithLabelValues(r.ep).Observe(took.Seconds())
	if ue == nil {
		if e := c.log.Debug(); e.Enabled() {
			e.Str("endpoint", r.ep).Int("status", status).Str("class", r.class.String()).Dur("took", took).Msg("upstream call")
		}
		return waited, nil
	}
	ue.Message = strings.ReplaceAll(ue.Message, c.cfg.APIKey, "[redacted]")
	if e := c.log.Debug(); e.Enabled() {
		e.Str("endpoint", r.ep).Int("status", ue.Status).Str("code", ue.Code).Str("class", r.class.String()).
			Dur("took", took).Msg("upstream call failed")
	}
	return waited, ue
}

// exchange sends one request bounded by Config.Timeout and reads the answer.
func (c *Client) exchange(ctx context.Context, r request) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.method, c.cfg.BaseURL+r.path, r.body)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	res, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, res, nil
}

// transportError classifies a failed exchange. ctx is the caller's: its own deadline counts as a
// timeout, its cancellation as CANCELED.
func transportError(ctx context.Context, ep string, err error) *Error {
	code := CodeConnection
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		code = CodeCanceled
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		code = CodeTimeout
	}
	return &Error{Code: code, Endpoint: ep, Err: err}
}

// httpError decodes an error answer; a body that is not the documented JSON is kept as Message.
func httpError(ep string, status int, hdr http.Header, body []byte) *Error {
	e := &Error{Status: status, Endpoint: ep}
	var b struct {
		Error   string `json:"error"`
		Message string `json:"message"`
		JobID   string `json:"job_id"`
	}
	if json.Unmarshal(body, &b) == nil && (b.Error != "" || b.Message != "") {
		e.Code, e.Message, e.JobID = b.Error, b.Message, strings.ToLower(b.JobID)
	} else {
		e.Message = text.Truncate(string(body), 200)
	}
	if status != http.StatusTooManyRequests {
		e.RetryAfter = retryAfter(hdr.Get("Retry-After"), time.Now())
	}
	return e
}

// retryHint is the wait a 429 asks for: Retry-After, else x-ratelimit-reset, else 0.
func retryHint(hdr http.Header, now time.Time) time.Duration {
	if d := retryAfter(hdr.Get("Retry-After"), now); d > 0 {
		return d
	}
	v := strings.TrimSpace(hdr.Get("X-Ratelimit-Reset"))
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		return 0
	}
	if f > 1e9 { // a Unix time
		return time.Until(time.Unix(0, int64(f*1e9)))
	}
	return time.Duration(f * float64(time.Second))
}

// retryAfter parses a Retry-After value: delta seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		return max(0, time.Duration(s*float64(time.Second)))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now))
	}
	return 0
}

// decodeJob decodes one job object, keeping it verbatim in Raw.
func decodeJob(raw []byte) (Job, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return Job{}, fmt.Errorf("job is not a JSON object: %q", text.Truncate(string(raw), 200))
	}
	var j Job
	if err := json.Unmarshal(raw, &j); err != nil {
		return Job{}, fmt.Errorf("decode job: %w", err)
	}
	if j.JobID == "" {
		return Job{}, errors.New("job without job_id")
	}
	// The bridge keys jobs by the lower-case form of their id (jobs.CanonicalID); Raw keeps the upstream's.
	j.JobID = strings.ToLower(j.JobID)
	j.Raw = bytes.Clone(raw)
	return j, nil
}
