package upstream

import (
	"bytes"
	"cmp"
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
// HTTP request, and what reads the body of a 2xx answer: decode the whole body (nil: it is not read for
// anything), or stream it as it arrives.
type request struct {
	class        Class
	ep           string // e.g. "GET /job/{id}"
	method, path string
	body         io.Reader
	ctype        string
	accept       string // the Accept header; empty means application/json
	decode       func([]byte) error
	// stream, when set, reads the body of a 2xx answer as it arrives, instead of decode. Config.Timeout
	// then bounds the wait for the headers and each read of the body, not the whole call. What it returns
	// ends the call: a *stopped hands back its cause as it is, any other error is a BAD_RESPONSE.
	stream func(io.Reader) error
}

// answer is what one exchange got: the status and headers, and the body read whole, or what
// request.stream returned of it.
type answer struct {
	status   int
	hdr      http.Header
	body     []byte
	streamed error
}

// stopped is the error with which the caller of a stream (not the upstream) ended it.
type stopped struct{ err error }

func (s *stopped) Error() string { return s.err.Error() }
func (s *stopped) Unwrap() error { return s.err }

// do runs one budgeted call and hands the body of a 2xx answer to r.decode or r.stream. It returns how
// long the call waited for the budget. Failures are *Error, except a ctx that ends while waiting for
// budget, and the error with which a stream's caller stopped it (returned as it is).
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
	a, err := c.exchange(ctx, r)
	ue, stop := c.judge(ctx, r, a, err)
	took := time.Since(start)
	c.m.calls.WithLabelValues(r.ep, outcome(ue)).Inc()
	c.m.latency.WithLabelValues(r.ep).Observe(took.Seconds())
	if ue == nil {
		if e := c.log.Debug(); e.Enabled() {
			e.Str("endpoint", r.ep).Int("status", a.status).Str("class", r.class.String()).Dur("took", took).
				Bool("stopped", stop != nil).Msg("upstream call")
		}
		return waited, stop
	}
	ue.Message = strings.ReplaceAll(ue.Message, c.cfg.APIKey, "[redacted]")
	if e := c.log.Debug(); e.Enabled() {
		e.Str("endpoint", r.ep).Int("status", ue.Status).Str("code", ue.Code).Str("class", r.class.String()).
			Dur("took", took).Msg("upstream call failed")
	}
	return waited, ue
}

// judge turns one exchange into the call's *Error (nil for a 2xx answer that decoded) and tells the
// Limiter of the answer. A stream that its caller stopped is no failure of the call: the caller's error
// comes back as stop.
func (c *Client) judge(ctx context.Context, r request, a answer, err error) (ue *Error, stop error) {
	switch {
	case err != nil:
		return transportError(ctx, r.ep, err), nil
	case a.status == http.StatusTooManyRequests:
		c.m.rateLimited.Inc()
		ue = httpError(r.ep, a.status, a.hdr, a.body)
		ue.RetryAfter = c.limiter.RateLimited(retryHint(a.hdr, time.Now()))
		c.log.Warn().Str("endpoint", r.ep).Dur("pause", ue.RetryAfter).Msg("upstream rate limit: pausing all calls")
		return ue, nil
	}
	c.limiter.Succeeded() // any answer but 429 means the rate is acceptable
	var st *stopped
	switch {
	case a.status < 200 || a.status > 299:
		return httpError(r.ep, a.status, a.hdr, a.body), nil
	case errors.As(a.streamed, &st):
		return nil, st.err
	case a.streamed != nil:
		return &Error{Status: a.status, Code: CodeBadResponse, Endpoint: r.ep, Err: a.streamed}, nil
	case r.decode != nil:
		if err := r.decode(a.body); err != nil {
			return &Error{Status: a.status, Code: CodeBadResponse, Endpoint: r.ep, Err: err}, nil
		}
	}
	return nil, nil
}

// exchange sends one request and reads its answer. Config.Timeout bounds the exchange; for a stream, it
// bounds the wait for the headers and each read of the body instead (see idleTimer). The rate-limit
// headers are reported as soon as the answer comes.
func (c *Client) exchange(ctx context.Context, r request) (answer, error) {
	var cancel context.CancelFunc
	var idle *idleTimer
	if r.stream != nil {
		ctx, cancel = context.WithCancel(ctx)
		idle = startIdle(c.cfg.Timeout, cancel)
		defer idle.t.Stop()
	} else {
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
	}
	defer cancel()
	req, err := http.NewRequestWithContext(c.withEndpoint(ctx, r.ep), r.method, c.cfg.BaseURL+r.path, r.body)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", cmp.Or(r.accept, "application/json"))
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	c.inFlight.Add(1)
	resp, err := c.cfg.HTTP.Do(req)
	others := int(c.inFlight.Add(-1))
	if idle != nil {
		idle.t.Stop() // each read of the body arms it again
	}
	if err != nil {
		return answer{}, idle.cause(err)
	}
	defer resp.Body.Close()
	c.observe(resp.Header, others)
	a := answer{status: resp.StatusCode, hdr: resp.Header}
	if idle == nil {
		a.body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
		return a, err
	}
	body := &idleBody{r: resp.Body, idle: idle}
	if a.status < 200 || a.status > 299 {
		a.body, _ = io.ReadAll(io.LimitReader(body, maxBody))
		return a, body.err
	}
	a.streamed = r.stream(body)
	if _, ok := a.streamed.(*stopped); ok {
		return a, nil // the caller's stop wins over a failure of a read ahead
	}
	return a, body.err
}

// observe tells a Limiter that is a [HeaderObserver] the rate-limit headers of an answer; others is how
// many other calls of the client were in flight.
func (c *Client) observe(hdr http.Header, others int) {
	obs, ok := c.limiter.(HeaderObserver)
	if !ok {
		return
	}
	if rl, ok := parseRateLimit(hdr, time.Now()); ok {
		rl.InFlight = others
		obs.ObserveLimit(rl)
	}
}

// idleTimer ends a streamed exchange whose upstream keeps it waiting longer than d: for the answer's
// headers, or for any one read of its body. The time the caller spends between reads is its own.
type idleTimer struct {
	d     time.Duration
	t     *time.Timer
	fired atomic.Bool
}

// startIdle arms an idleTimer that calls cancel when it fires.
func startIdle(d time.Duration, cancel context.CancelFunc) *idleTimer {
	it := &idleTimer{d: d}
	it.t = time.AfterFunc(d, func() {
		it.fired.Store(true)
		cancel()
	})
	return it
}

// cause is err, or a timeout when the timer (non-nil) ended the exchange.
func (it *idleTimer) cause(err error) error {
	if err == nil || it == nil || !it.fired.Load() {
		return err
	}
	return fmt.Errorf("%w: the upstream sent nothing for %v", context.DeadlineExceeded, it.d)
}

// idleBody is the body of a streamed answer, each read bounded by its idleTimer. err keeps the first
// failed read (io.EOF aside): a failure of the transport, not of what the body says.
type idleBody struct {
	r    io.Reader
	idle *idleTimer
	err  error
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	b.idle.t.Reset(b.idle.d)
	n, err := b.r.Read(p)
	b.idle.t.Stop()
	if err != nil && err != io.EOF {
		b.err = b.idle.cause(err)
		return n, b.err
	}
	return n, err
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
