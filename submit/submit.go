package submit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/internal/serving"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// HeaderIdempotencyKey is the submit request header that makes a submission idempotent.
const HeaderIdempotencyKey = contract.HeaderIdempotencyKey

// HeaderRetryAfter is the header of a BUSY refusal: seconds to wait before retrying.
const HeaderRetryAfter = contract.HeaderRetryAfter

// StatusUnknown is the submit reply status for a job the upstream may or may not have created (503
// SUBMISSION_STATUS_UNKNOWN with a job_id). The bridge tracks it as pending: the reconciler polls it and
// a result or a timeout result follows on RESULTS, as for any other job.
const StatusUnknown = "unknown"

// DefaultModalities maps each modality of the documented (v1) contract ([contract.Modalities]) to its
// required form field.
func DefaultModalities() map[string]string { return ModalitiesFor(contract.ContractV1) }

// ModalitiesFor maps each modality served under api ([contract.ModalitiesFor]: v1, v2 or auto) to its
// required form field, as callers name it (the upstream client renames fields for v2).
func ModalitiesFor(api string) map[string]string {
	fields := map[string]string{}
	for _, m := range contract.ModalitiesFor(api) {
		fields[m.Name] = m.Field
	}
	return fields
}

// API is the part of the upstream client (*upstream.Client) the submitter calls; see
// [upstream.Client.Submit].
type API interface {
	Submit(ctx context.Context, modality string, fields map[string]string, webhookURL string) (upstream.Submission, error)
}

// Budget is what admission asks of the upstream budget API waits for (budget.Shared).
type Budget interface {
	// Capacity is the number of calls the budget can grant over the next d, counting what it could
	// grant now.
	Capacity(d time.Duration) float64
	// Refused notes a submission admission turned away: demand exceeds what the budget grants.
	Refused()
}

// Config configures a [Service]. NC, JS, Idempotency, API and Store are required, and Budget with Ledger.
type Config struct {
	// NC is the connection the micro service listens on.
	NC *nats.Conn
	// Names are the bridge's names (its namespace's): the service, its subjects and RESULTS. The zero
	// Names means contract.Default.
	Names contract.Names
	// JS reads results for jobs.status.
	JS jetstream.JetStream
	// Idempotency is the [contract.BucketIdempotency] bucket, as [natsx.Provision] makes it; its TTL is how long
	// an idempotency key is remembered.
	Idempotency jetstream.KeyValue
	// IdempotencyStream is the stream under Idempotency, whose subjects an ended intent and an answered
	// key of a compacted job are purged from; nil: Start opens it by name.
	IdempotencyStream jetstream.Stream
	// API is the budgeted upstream client.
	API API
	// Store is the JOBS store the submitter records accepted jobs in.
	Store *jobs.Store
	// History is the history of delivered jobs: jobs.status answers for a compacted job from it, and an
	// idempotent replay of a compacted job's submission does not record the job again. Nil: neither.
	History *history.Store
	// Deadlines set each new job's deadline; default [jobs.DefaultDeadlines].
	Deadlines jobs.Deadlines
	// Log receives the submitter's events, tagged component=submit.
	Log zerolog.Logger
	// Metrics registers bridge_submit_requests_total and bridge_submit_status_requests_total; nil registers nothing.
	Metrics prometheus.Registerer
	// Now is the clock of submitted_at and deadlines; default time.Now.
	Now func() time.Time

	// Modalities maps each served modality (endpoint moderate.<modality>) to the form field it requires.
	// A request may carry only that field. Default [DefaultModalities]; [ModalitiesFor] gives those of
	// each contract.
	Modalities map[string]string
	// PublicURL is the base URL the upstream reaches this bridge's webhook endpoint at. Each submission
	// sets webhook_url to PublicURL/webhook/<modality> (plus ?token=Token). Empty: no webhook_url is sent
	// and the account-wide webhook registered with the upstream is relied on (and if there is none, the
	// reconciler's polling delivers the results).
	PublicURL string
	// Token is the webhook token ingest checks; never logged.
	Token string
	// MaxRequestBytes bounds a request body; default 64 KiB.
	MaxRequestBytes int
	// MaxTextChars bounds a text field (one not ending in _url), in characters; default 20000.
	MaxTextChars int
	// MaxURLChars bounds a URL field (name ending in _url); default 2048.
	MaxURLChars int
	// Concurrency bounds the requests handled at once; default 64. Further requests wait in the
	// subscription's pending buffer.
	Concurrency int
	// SubmitTimeout bounds one submission, including the wait for upstream budget; default 60s. The
	// submission is finished and recorded even if the requester stopped waiting.
	SubmitTimeout time.Duration
	// StoreAttempts is how often writing the JOBS record is tried after the upstream accepted; default 5.
	StoreAttempts int
	// IdempotencyWait is how long a request waits for a concurrent request with the same key to finish
	// before answering 409; default 30s.
	IdempotencyWait time.Duration
	// Version of the micro service; default "1.0.0".
	Version string
	// ShutdownTimeout is how long Stop waits for in-flight requests; default 15s.
	ShutdownTimeout time.Duration

	// Ledger counts the verifications owed by accepted jobs, for admission; nil admits every request
	// the budget itself does not refuse.
	Ledger Ledger
	// Budget is the budget API waits for, whose capacity admission plans on; required with Ledger.
	Budget Budget
	// PollInterval is the reconciler's sweep period, for the in-flight list pages admission counts as
	// owed; default 30s.
	PollInterval time.Duration
	// IntentScan is how often interrupted submissions (intents that outlived them) are counted; default 30s.
	IntentScan time.Duration
	// AdmitShare is the share of the budget's capacity up to a new job's deadline that owed work may
	// plan on; default DefaultAdmitShare.
	AdmitShare float64
	// VerifyCost is what verifying owed jobs will cost the budget, for admission: batch.Cost while the
	// verifier batches (see package batch); nil counts one GET /job per job.
	VerifyCost func(owed int) float64

	// TracerProvider makes a span of each submission, a child of the request's W3C traceparent header;
	// the upstream call is its child when the API traces (upstream.Config.TracerProvider), and the job's
	// JOBS record keeps its trace context, which the job's verification and result continue. nil makes no
	// span, and the request's traceparent still reaches the record.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() {
	c.Names = c.Names.OrDefault()
	if c.Deadlines.ByModality == nil {
		c.Deadlines = jobs.DefaultDeadlines()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Modalities == nil {
		c.Modalities = DefaultModalities()
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = 64 << 10
	}
	if c.MaxTextChars == 0 {
		c.MaxTextChars = 20000
	}
	if c.MaxURLChars == 0 {
		c.MaxURLChars = 2048
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if c.SubmitTimeout == 0 {
		c.SubmitTimeout = 60 * time.Second
	}
	if c.StoreAttempts == 0 {
		c.StoreAttempts = 5
	}
	if c.IdempotencyWait == 0 {
		c.IdempotencyWait = 30 * time.Second
	}
	if c.Version == "" {
		c.Version = "1.0.0"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 15 * time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = 30 * time.Second
	}
	if c.IntentScan == 0 {
		c.IntentScan = 30 * time.Second
	}
	if c.AdmitShare == 0 {
		c.AdmitShare = DefaultAdmitShare
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
}

// Validate reports the first invalid field, after defaults are applied.
func (c *Config) Validate() error {
	switch {
	case c.NC == nil:
		return fmt.Errorf("%w: NC: required", ErrInvalidConfig)
	case c.JS == nil:
		return fmt.Errorf("%w: JS: required", ErrInvalidConfig)
	case c.Idempotency == nil:
		return fmt.Errorf("%w: Idempotency: required", ErrInvalidConfig)
	case c.API == nil:
		return fmt.Errorf("%w: API: required", ErrInvalidConfig)
	case c.Store == nil:
		return fmt.Errorf("%w: Store: required", ErrInvalidConfig)
	case c.Ledger != nil && c.Budget == nil:
		return fmt.Errorf("%w: Budget: required with Ledger", ErrInvalidConfig)
	case len(c.Modalities) == 0:
		return fmt.Errorf("%w: Modalities: at least one", ErrInvalidConfig)
	case c.MaxRequestBytes < 1 || c.MaxTextChars < 1 || c.MaxURLChars < 1:
		return fmt.Errorf("%w: MaxRequestBytes, MaxTextChars, MaxURLChars: must be positive", ErrInvalidConfig)
	case c.Concurrency < 1:
		return fmt.Errorf("%w: Concurrency %d: must be at least 1", ErrInvalidConfig, c.Concurrency)
	case c.SubmitTimeout < time.Second:
		return fmt.Errorf("%w: SubmitTimeout %v: must be at least 1s", ErrInvalidConfig, c.SubmitTimeout)
	case c.StoreAttempts < 1:
		return fmt.Errorf("%w: StoreAttempts %d: must be at least 1", ErrInvalidConfig, c.StoreAttempts)
	case c.IdempotencyWait < 0:
		return fmt.Errorf("%w: IdempotencyWait %v: must not be negative", ErrInvalidConfig, c.IdempotencyWait)
	}
	for m, field := range c.Modalities {
		if !validToken(m) || field == "" {
			return fmt.Errorf("%w: Modalities[%q]=%q: modality must be a subject token and name a field",
				ErrInvalidConfig, m, field)
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			return fmt.Errorf("%w: PublicURL %q: must be an http(s) URL with a host and no query",
				ErrInvalidConfig, c.PublicURL)
		}
	}
	return nil
}

// validToken reports whether s can be one subject token and a micro endpoint name.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// Reply is the answer to a submit request.
type Reply struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"`
}

// Service is the submit role: the micro service [s.cfg.Names.ServiceName] with one endpoint per modality on
// moderate.<modality>, and the job-status endpoint on [s.cfg.Names.SubjectJobStatus]. Several submitters share
// the endpoints through micro's queue group.
//
// A submit request is a JSON object of string fields, the upstream's form fields for the modality. It is
// validated first (only the modality's field, present, a non-empty string within limits, a URL field
// http(s) with a public host; webhook_url is refused because the bridge sets it); a request that fails
// is answered with code 400 and never reaches the upstream. Then:
//
//  1. With an Idempotency-Key header, the key is reserved in [contract.BucketIdempotency] with a create (so of
//     two concurrent identical requests only one reaches the upstream; the other waits for its job_id).
//  2. The job is submitted at [upstream.ClassSubmit].
//  3. The JOBS record (pending, origin submit, deadline) is written, retried StoreAttempts times.
//  4. Only then the reply {"job_id","status"} goes out.
//
// Errors are micro errors: code = the upstream's HTTP status (502 connection failure, 504 timeout, when
// no answer came), description "<CODE>: <message>". If the JOBS record cannot be written after the
// upstream accepted, the reply is code 500 with the job_id in the description and in the error data
// ({"job_id":...}); the idempotency entry still maps the key to that job_id, and a retry with the same
// key writes the missing record and answers the job normally. A 503 SUBMISSION_STATUS_UNKNOWN with a
// job_id is recorded as a pending job and answered as a success with status "unknown" ([StatusUnknown]):
// the job may exist, so the requester must not resubmit; the reconciler polls it and RESULTS gets its
// result or its timeout result.
type Service struct {
	cfg     Config
	log     zerolog.Logger
	metrics *submitMetrics
	sem     chan struct{}

	// mu guards svc, baseCtx, cancel and closing, and orders wg.Add before wg.Wait.
	mu      sync.Mutex
	closing bool
	svc     micro.Service
	baseCtx context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// serving is set once the endpoints' subscriptions are known to the server.
	serving serving.Signal
	// tracer makes the submission spans (Config.TracerProvider).
	tracer trace.Tracer
}

// New checks cfg and registers the metrics. It does not touch NATS; Start does.
func New(cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newSubmitMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("submit metrics: %w", err)
	}
	return &Service{
		cfg:     cfg,
		log:     cfg.Log.With().Str("component", "submit").Logger(),
		metrics: m,
		sem:     make(chan struct{}, cfg.Concurrency),
		tracer:  cfg.TracerProvider.Tracer(tracerName),
	}, nil
}

// Start starts the micro service; requests are served when it returns nil. It fails if the submitter was
// started before.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svc != nil {
		return errors.New("submit: already started")
	}
	if s.cfg.IdempotencyStream == nil {
		name := contract.KVStream(s.cfg.Idempotency.Bucket())
		st, err := s.cfg.JS.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("submit: stream %s: %w", name, err)
		}
		s.cfg.IdempotencyStream = st
	}
	s.baseCtx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go s.watchIntents(s.baseCtx)

	svc, err := micro.AddService(s.cfg.NC, micro.Config{
		Name:        s.cfg.Names.ServiceName,
		Version:     s.cfg.Version,
		Description: "moderation submissions and job status",
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			s.log.Error().Str("subject", e.Subject).Str("error", e.Description).Msg("micro service error")
		},
	})
	if err != nil {
		s.cancel()
		return fmt.Errorf("add service %s: %w", s.cfg.Names.ServiceName, err)
	}
	for modality, field := range s.cfg.Modalities {
		h := s.async(modality, func(ctx context.Context, req micro.Request) { s.handleSubmitTraced(ctx, req, modality, field) })
		if err := svc.AddEndpoint(modality, h, micro.WithEndpointSubject(s.cfg.Names.SubjectSubmit+modality),
			micro.WithEndpointMetadata(map[string]string{"required_field": field})); err != nil {
			_ = svc.Stop()
			s.cancel()
			return fmt.Errorf("add endpoint %s: %w", s.cfg.Names.SubjectSubmit+modality, err)
		}
	}
	if err := svc.AddEndpoint(statusLabel, s.async(statusLabel, s.handleStatus), micro.WithEndpointSubject(s.cfg.Names.SubjectJobStatus)); err != nil {
		_ = svc.Stop()
		s.cancel()
		return fmt.Errorf("add endpoint %s: %w", s.cfg.Names.SubjectJobStatus, err)
	}
	s.svc = svc
	// The subscriptions are sent asynchronously: a flush makes the server know them before the service
	// counts as serving, so a request sent the instant the process is ready finds a responder.
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := s.cfg.NC.FlushWithContext(fctx); err != nil {
		s.log.Warn().Err(err).Msg("flush after adding the service; serving counts from the next successful flush")
		go s.flushThenServe(s.baseCtx)
	} else {
		s.serving.Set()
	}
	s.log.Info().Int("modalities", len(s.cfg.Modalities)).Bool("webhook_url", s.cfg.PublicURL != "").Msg("submit service started")
	return nil
}

// flushTimeout bounds a flush of the service's subscriptions.
const flushTimeout = 5 * time.Second

// flushThenServe retries the flush until it succeeds (then the service serves) or ctx ends.
func (s *Service) flushThenServe(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fctx, cancel := context.WithTimeout(ctx, flushTimeout)
		err := s.cfg.NC.FlushWithContext(fctx)
		cancel()
		if err == nil {
			s.serving.Set()
			return
		}
	}
}

// Serving is closed once the service's subscriptions are known to the NATS server it is connected to.
func (s *Service) Serving() <-chan struct{} { return s.serving.Done() }

// Stop stops taking requests (micro Stop drains the subscriptions), waits up to ShutdownTimeout for
// in-flight ones, then cancels them. It is idempotent.
func (s *Service) Stop() error {
	s.mu.Lock()
	svc := s.svc
	cancel := s.cancel
	s.closing = svc != nil
	s.mu.Unlock()
	if svc == nil {
		return nil
	}
	var err error
	if !svc.Stopped() {
		err = svc.Stop()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn().Msg("submit requests still running; cancelling them")
		cancel()
		<-done
	}
	cancel()
	s.log.Info().Msg("submit service stopped")
	return err
}

// Run starts the service, serves until ctx is cancelled, then stops. It returns nil on a clean shutdown.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return s.Stop()
}

// async runs h on its own goroutine, at most Concurrency at once: a micro endpoint calls its handler
// sequentially, and one submission waiting for upstream budget must not hold up the others.
func (s *Service) async(label string, h func(context.Context, micro.Request)) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		// micro's Stop drains the subscriptions without waiting, so requests can still arrive while Stop
		// waits for the in-flight ones: they are turned away, and wg.Add never races wg.Wait.
		s.mu.Lock()
		closing := s.closing
		if !closing {
			s.wg.Add(1)
		}
		s.mu.Unlock()
		if closing {
			s.reply(answer{req, label}, "shutdown", errShuttingDown)
			return
		}
		select {
		case s.sem <- struct{}{}:
		case <-s.baseCtx.Done():
			s.wg.Done()
			s.reply(answer{req, label}, "shutdown", errShuttingDown)
			return
		}
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			h(s.baseCtx, req)
		}()
	})
}

var errShuttingDown = &replyError{code: "503", desc: "SHUTTING_DOWN: the bridge is stopping; retry"}

// replyError is a micro error answer.
type replyError struct {
	code, desc string
	// data is the body; nil gets the JSON error body {code, message} (what `nats req` shows).
	data []byte
	// retryAfter, when positive, is sent as the Retry-After header, in seconds.
	retryAfter int
	// field names the request field to blame, when there is one; it goes into the JSON body.
	field string
}

// body is the JSON error body: the description's leading code name and the message after it.
func (e *replyError) body() []byte {
	if e.data != nil {
		return e.data
	}
	name, msg, ok := strings.Cut(e.desc, ": ")
	if !ok {
		name, msg = "ERROR", e.desc
	}
	b, _ := json.Marshal(ErrorBody{Code: name, Message: msg, Field: e.field})
	return b
}

// ErrorBody is the JSON body of an error reply, next to micro's standard error headers, so a person
// using `nats req` reads what went wrong (docs/schema/error.schema.json).
type ErrorBody struct {
	// Code is the error's name, the description's leading word: INVALID_REQUEST, JOB_NOT_FOUND, BUSY, ...
	Code string `json:"code"`
	// Message says what went wrong.
	Message string `json:"message"`
	// Field is the request field to blame, when there is one.
	Field string `json:"field,omitempty"`
}

func badRequest(format string, args ...any) *replyError {
	return &replyError{code: "400", desc: "INVALID_REQUEST: " + fmt.Sprintf(format, args...)}
}

// badField is a bad request that one request field is to blame for.
func badField(field, format string, args ...any) *replyError {
	e := badRequest(format, args...)
	e.field = field
	return e
}

// answer is where a reply goes: the request, and the label (a modality, or jobs.status) its outcome is
// counted under.
type answer struct {
	req   micro.Request
	label string
}

// reply answers a.req with v (JSON) or e, and counts the outcome. It publishes to the reply subject itself
// rather than through req.Respond/req.Error: those record the outcome in the request for micro's stats,
// which micro reads as soon as the (asynchronous) handler returned, a data race. So micro's stats count
// requests but not errors; bridge_submit_requests_total and bridge_submit_status_requests_total have the outcomes.
func (s *Service) reply(a answer, outcome string, e *replyError, v ...any) {
	req, label := a.req, a.label
	s.metrics.count(label, outcome)
	if req.Reply() == "" {
		return
	}
	m := nats.NewMsg(req.Reply())
	if e != nil {
		m.Header.Set(micro.ErrorHeader, e.desc)
		m.Header.Set(micro.ErrorCodeHeader, e.code)
		if e.retryAfter > 0 {
			m.Header.Set(HeaderRetryAfter, strconv.Itoa(e.retryAfter))
		}
		m.Data = e.body()
	} else {
		b, err := json.Marshal(v[0])
		if err != nil {
			s.log.Error().Err(err).Str("modality", label).Msg("marshal reply")
			m.Header.Set(micro.ErrorHeader, "INTERNAL_ERROR: reply not encodable")
			m.Header.Set(micro.ErrorCodeHeader, "500")
		}
		m.Data = b
	}
	if err := s.cfg.NC.PublishMsg(m); err != nil {
		s.log.Warn().Err(err).Str("modality", label).Msg("reply")
	}
}

// replyAccepted answers an accepted submission with r, saying in [contract.HeaderUpstreamEndpoint] which
// upstream path took it (under v2, /moderate/text for moderate.prompt and moderate.chat).
func (s *Service) replyAccepted(a answer, outcome string, r Reply, endpoint string) {
	req, label := a.req, a.label
	s.metrics.requests.WithLabelValues(label, outcome).Inc()
	if req.Reply() == "" {
		return
	}
	m := nats.NewMsg(req.Reply())
	m.Data, _ = json.Marshal(r) // a struct of strings always encodes
	if endpoint != "" {
		m.Header.Set(contract.HeaderUpstreamEndpoint, endpoint)
	}
	if err := s.cfg.NC.PublishMsg(m); err != nil {
		s.log.Warn().Err(err).Str("modality", label).Msg("reply")
	}
}

// upstreamError turns an upstream failure into the micro error DESIGN.md asks for.
func upstreamError(err error) *replyError {
	ue, ok := errors.AsType[*upstream.Error](err)
	if !ok {
		return &replyError{code: "500", desc: "INTERNAL_ERROR: " + err.Error()}
	}
	code := strconv.Itoa(ue.Status)
	switch {
	case ue.Status != 0:
	case ue.Code == upstream.CodeTimeout:
		code = "504"
	case ue.Code == upstream.CodeCanceled:
		code = "503"
	default:
		code = "502"
	}
	name := ue.Code
	if name == "" {
		name = "UPSTREAM_ERROR"
	}
	msg := ue.Message
	if msg == "" && ue.Err != nil {
		msg = ue.Err.Error()
	}
	return &replyError{code: code, desc: name + ": " + msg}
}

// scrub removes the webhook token from an upstream error before it is logged or answered: the upstream's
// messages may quote the webhook_url the bridge sent, and that carries the token.
func (s *Service) scrub(err error) error {
	ue, ok := errors.AsType[*upstream.Error](err)
	if !ok || s.cfg.Token == "" || !strings.Contains(err.Error(), s.cfg.Token) &&
		!strings.Contains(err.Error(), url.QueryEscape(s.cfg.Token)) {
		return err
	}
	redact := func(text string) string {
		text = strings.ReplaceAll(text, url.QueryEscape(s.cfg.Token), "[redacted]")
		return strings.ReplaceAll(text, s.cfg.Token, "[redacted]")
	}
	c := *ue
	c.Message = redact(c.Message)
	if c.Err != nil && redact(c.Err.Error()) != c.Err.Error() {
		c.Err = errors.New(redact(c.Err.Error()))
	}
	return &c
}

func (s *Service) webhookURL(modality string) string {
	if s.cfg.PublicURL == "" {
		return ""
	}
	u := s.cfg.PublicURL + "/webhook/" + modality
	if s.cfg.Token != "" {
		u += "?token=" + url.QueryEscape(s.cfg.Token)
	}
	return u
}

// handleSubmit serves moderate.<modality>.
func (s *Service) handleSubmit(base context.Context, req micro.Request, modality, field string) {
	fields, rerr := s.validate(req.Data(), field)
	if rerr != nil {
		s.reply(answer{req, modality}, "invalid", rerr)
		return
	}
	ctx, cancel := context.WithTimeout(base, s.cfg.SubmitTimeout)
	defer cancel()
	key := strings.TrimSpace(req.Headers().Get(HeaderIdempotencyKey))
	log := s.log.With().Str("modality", modality).Logger()

	res, done := s.reserveKey(ctx, req, modality, key)
	if done {
		return
	}

	// Finish before you start: refuse fast what the budget cannot carry to its result. A refused
	// Idempotency-Key is released, so a retry with it submits afresh.
	if be := s.admit(modality); be != nil {
		s.cfg.Budget.Refused()
		res.release(ctx)
		log.Debug().Str("reason", be.Reason).Msg("submission refused: busy")
		s.reply(answer{req, modality}, "busy", busy(be))
		return
	}
	// The intent ends when the job is recorded or the upstream's answer says there is none; after a
	// submission without an answer, or a record that could not be written, it stays, and is reported.
	in := s.beginIntent(ctx, modality, res.hash())
	sub, err := s.cfg.API.Submit(ctx, modality, fields, s.webhookURL(modality))
	if be, ok := errors.AsType[*upstream.BusyError](err); ok {
		in.end(ctx)
		res.release(ctx)
		log.Debug().Str("reason", be.Reason).Msg("submission refused: busy")
		s.reply(answer{req, modality}, "busy", busy(be))
		return
	}
	err = s.scrub(err)
	status := sub.Status
	if err != nil {
		if !(sub.StatusUnknown && sub.JobID != "") {
			outcome := "upstream_error"
			if ue, ok := errors.AsType[*upstream.Error](err); ok && ue.Status == 0 {
				// No answer: the job may exist. Keep the reservation marked unknown so a retry with the
				// key does not submit blindly.
				outcome = "upstream_unknown"
				res.markUnknown(ctx)
			} else {
				in.end(ctx)
				res.release(ctx)
			}
			log.Warn().Err(err).Msg("submission failed")
			s.reply(answer{req, modality}, outcome, upstreamError(err))
			return
		}
		status = StatusUnknown
		log.Warn().Err(err).Str("job_id", sub.JobID).Msg("submission status unknown; job tracked as pending")
	}
	if status == "" {
		status = upstream.StatusQueued
	}
	log = log.With().Str("job_id", sub.JobID).Logger()
	res.complete(ctx, sub.JobID, status, log)

	if err := s.record(ctx, sub.JobID, modality, key); err != nil {
		log.Error().Err(err).Msg("upstream accepted the job but its JOBS record could not be written")
		data, _ := json.Marshal(Reply{JobID: sub.JobID, Status: status})
		s.reply(answer{req, modality}, "store_error", &replyError{code: "500", data: data,
			desc: fmt.Sprintf("STORE_FAILED: job %s was accepted by the upstream but not recorded; retry with the same %s, "+
				"or track the job_id yourself: %v", sub.JobID, HeaderIdempotencyKey, err)})
		return
	}
	in.end(ctx)
	outcome := "accepted"
	if status == StatusUnknown {
		outcome = "status_unknown"
	}
	log.Debug().Str("status", status).Str("endpoint", sub.Endpoint).Msg("job submitted")
	s.replyAccepted(answer{req, modality}, outcome, Reply{JobID: sub.JobID, Status: status}, sub.Endpoint)
}

// reserveKey takes the request's Idempotency-Key, if any. done reports that the request was answered
// already: a bad or busy key, or a replay of the key's earlier job.
func (s *Service) reserveKey(ctx context.Context, req micro.Request, modality, key string) (res *reservation, done bool) {
	if key == "" {
		return nil, false
	}
	if len(key) > 256 {
		s.reply(answer{req, modality}, "invalid", badRequest("%s: at most 256 bytes", HeaderIdempotencyKey))
		return nil, true
	}
	res, existing, err := s.reserve(ctx, modality, key)
	switch {
	case err != nil:
		s.reply(answer{req, modality}, "conflict", idemError(err))
		return nil, true
	case existing != nil:
		s.replayIdempotent(ctx, answer{req, modality}, key, existing)
		return nil, true
	case s.fromHistory(ctx, answer{req, modality}, res, key):
		return nil, true
	}
	return res, false
}

// record writes the pending JOBS record of a submitted job, with ctx's trace context, retrying with a
// short backoff. A record that exists already (the job's webhook was verified first) is completed with
// what only submit knows.
func (s *Service) record(ctx context.Context, id, modality, key string) error {
	now := s.cfg.Now().UTC()
	rec := jobs.Record{
		JobID: id, Modality: modality, State: jobs.StatePending, Origin: jobs.OriginSubmit,
		SubmittedAt: now, Deadline: now.Add(s.cfg.Deadlines.For(modality)), IdempotencyKey: key,
	}
	tr := contract.TraceOf(ctx)
	rec.SetTrace(tr)
	// The record must be written even if the requester's wait or SubmitTimeout ended meanwhile.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var err error
	for attempt := range s.cfg.StoreAttempts {
		if attempt > 0 {
			if werr := retry.Sleep(ctx, retry.Exp(attempt, 100*time.Millisecond, 10*time.Second)); werr != nil {
				return fmt.Errorf("%w (last: %w)", werr, err)
			}
		}
		_, err = s.cfg.Store.Create(ctx, rec)
		if errors.Is(err, jobs.ErrExists) {
			_, err = s.cfg.Store.Update(ctx, id, func(r *jobs.Record) (bool, error) {
				if r.Origin == jobs.OriginSubmit && r.IdempotencyKey == key && r.Modality == modality &&
					(r.TraceParent != "" || tr.Parent == "") {
					return false, nil
				}
				if r.TraceParent == "" {
					r.SetTrace(tr)
				}
				r.Origin = jobs.OriginSubmit
				// The verifier wrote the upstream's type (v2: text for a prompt); the result subject is the
				// caller's modality, as long as the result is not out yet.
				if r.State == jobs.StatePending {
					r.Modality = modality
				}
				if r.IdempotencyKey == "" {
					r.IdempotencyKey = key
				}
				return true, nil
			})
		}
		if err == nil {
			return nil
		}
		s.log.Warn().Err(err).Str("job_id", id).Int("attempt", attempt+1).Msg("write job record")
	}
	return err
}
