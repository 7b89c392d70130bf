package simulator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// maxForm bounds a submission body.
const maxForm = 1 << 20

// Simulator is the simulated upstream. All methods are safe for concurrent use.
type Simulator struct {
	cfg     Config
	seed    uint64
	log     zerolog.Logger
	keys    map[string]*Key
	handler http.Handler
	extra   []byte // Config.ExtraFields as a JSON object
	// webhookKey signs webhooks (Config.WebhookSecret); nil sends them unsigned.
	webhookKey []byte
	// unmetered lifts the rate limit (SetMetered).
	unmetered atomic.Bool

	mu       sync.RWMutex // mu guards jobs, accounts, every job's fields, holdNew and custom
	jobs     map[string]*job
	accounts map[string]*account
	seq      uint64
	holdNew  bool
	custom   []string // the custom categories' slugs

	faultMu sync.RWMutex // faultMu guards faults and paymentRequired
	faults  map[string]Fault
	payment bool

	rngMu sync.Mutex // rngMu guards rng, used for per-request faults
	rng   *rand.Rand

	calls map[string]*callLog // fixed at New

	whq        chan delivery
	whCtx      context.Context
	whStop     context.CancelFunc
	whWG       sync.WaitGroup
	delivered  atomic.Int64
	failed     atomic.Int64
	dropped    atomic.Int64
	duplicated atomic.Int64
	retries    atomic.Int64 // v2 attempts after the first
	exhausted  atomic.Int64 // v2 webhooks that failed every attempt
	closed     atomic.Bool
	srvMu      sync.Mutex // srvMu guards srv and url
	srv        *http.Server
	url        string
}

type account struct {
	jobs    []*job // creation order
	webhook string
	limiter *rate.Limiter // v1
	window  window        // v2
}

// New returns a simulator with its webhook workers running; serve it with Start or Handler and stop it
// with Close.
func New(cfg Config) (*Simulator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Simulator{
		cfg:      cfg,
		seed:     cfg.Seed,
		keys:     make(map[string]*Key, len(cfg.Keys)),
		jobs:     make(map[string]*job),
		accounts: make(map[string]*account),
		faults:   make(map[string]Fault, len(cfg.Faults)),
		payment:  cfg.PaymentRequired,
		calls:    make(map[string]*callLog),
		whq:      make(chan delivery, cfg.WebhookQueue),
		custom:   slices.Clone(cfg.CustomCategories),
	}
	if len(cfg.ExtraFields) > 0 {
		b, err := json.Marshal(cfg.ExtraFields)
		if err != nil {
			return nil, fmt.Errorf("%w: ExtraFields: %v", ErrInvalidConfig, err)
		}
		s.extra = b
	}
	if cfg.WebhookSecret != "" {
		s.webhookKey, _ = webhookKey(cfg.WebhookSecret) // checked by Validate
	}
	if s.seed == 0 {
		s.seed = rand.Uint64()
	}
	s.log = cfg.Log.With().Str("component", "simulator").Uint64("seed", s.seed).Logger()
	s.rng = rand.New(rand.NewPCG(s.seed, math.MaxUint64))
	for i := range cfg.Keys {
		k := &cfg.Keys[i]
		s.keys[k.Token] = k
		if s.accounts[k.Account] == nil {
			a := &account{}
			if cfg.RPM > 0 && cfg.Contract == ContractV1 {
				a.limiter = rate.NewLimiter(rate.Limit(float64(cfg.RPM)/60), cfg.Burst)
			}
			s.accounts[k.Account] = a
		}
	}
	for ep, f := range cfg.Faults {
		s.faults[ep] = f
	}
	for _, ep := range []string{EndpointSubmit, EndpointJob, EndpointJobs, EndpointExport, EndpointModerationConfig,
		EndpointRegister, EndpointHealth, EndpointOther} {
		s.calls[ep] = &callLog{max: cfg.MaxCalls}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/moderate/{modality}", s.api(EndpointSubmit, s.submit))
	mux.HandleFunc("GET /api/v1/job/{id}", s.api(EndpointJob, s.getJob))
	mux.HandleFunc("GET /api/v1/jobs", s.api(EndpointJobs, s.listJobs))
	mux.HandleFunc("GET /api/v1/jobs/export", s.api(EndpointExport, s.exportJobs))
	mux.HandleFunc("GET /api/v1/me/moderation-config", s.api(EndpointModerationConfig, s.moderationConfig))
	mux.HandleFunc("POST /api/v1/webhook/register", s.api(EndpointRegister, s.register))
	if s.v2() {
		mux.HandleFunc("DELETE /api/v1/webhook/register", s.api(EndpointRegister, s.unregister))
	}
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /_sim/stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, s.Stats()) })
	mux.HandleFunc("/", s.notFound)
	s.handler = mux

	s.whCtx, s.whStop = context.WithCancel(context.Background())
	for range cfg.WebhookWorkers {
		s.whWG.Add(1)
		go s.webhookWorker()
	}
	s.log.Debug().Str("contract", cfg.Contract).Msg("simulator ready")
	return s, nil
}

// Seed is the seed in use (the configured one, or the random one picked for Seed 0).
func (s *Simulator) Seed() uint64 { return s.seed }

// Start listens on addr (e.g. "127.0.0.1:0") synchronously and serves in the background.
func (s *Simulator) Start(addr string) error {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if s.srv != nil {
		return errors.New("simulator: already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	s.url = "http://" + ln.Addr().String() + "/api/v1"
	go s.srv.Serve(ln) //nolint:errcheck // returns ErrServerClosed on Close
	s.log.Info().Str("url", s.url).Msg("simulator listening")
	return nil
}

// URL is the base URL including /api/v1, empty before Start.
func (s *Simulator) URL() string {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	return s.url
}

// Close stops the server, the job timers and the webhook workers (pending webhooks are discarded). It
// is idempotent.
func (s *Simulator) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.srvMu.Lock()
	if s.srv != nil {
		s.srv.Close()
	}
	s.srvMu.Unlock()
	s.whStop()
	s.whWG.Wait()
}

// SetFault replaces the fault of one endpoint (an Endpoint… constant, or EndpointAll); the zero Fault
// clears it.
func (s *Simulator) SetFault(endpoint string, f Fault) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if f == (Fault{}) {
		delete(s.faults, endpoint)
		return
	}
	s.faults[endpoint] = f
}

// SetMetered turns the rate limit off (false) and on again: a test seeds jobs "submitted elsewhere"
// without spending the account's requests of the window it then measures. Calls are logged either way.
func (s *Simulator) SetMetered(on bool) { s.unmetered.Store(!on) }

// SetPaymentRequired switches 402 PAYMENT_REQUIRED for submissions on or off.
func (s *Simulator) SetPaymentRequired(on bool) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.payment = on
}

func (s *Simulator) fault(ep string) (Fault, bool) {
	s.faultMu.RLock()
	defer s.faultMu.RUnlock()
	f, ok := s.faults[ep]
	if !ok {
		f = s.faults[EndpointAll]
	}
	return f, s.payment
}

// roll draws one request-level random decision.
func (s *Simulator) roll(p float64) bool {
	if p <= 0 {
		return false
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64() < p
}

// statusWriter remembers the status for the call log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets an http.ResponseController reach the connection's writer (to flush a streamed answer).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// request is what the middleware hands a handler.
type request struct {
	key   *Key
	acct  *account
	fault Fault
	pay   bool
}

// api wraps an authenticated endpoint: call log, latency and error faults, auth, termination and the
// per-account rate limit, in that order.
func (s *Simulator) api(ep string, h func(http.ResponseWriter, *http.Request, request)) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		w := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
		call := Call{At: s.cfg.Now(), Method: r.Method, Path: r.URL.RequestURI()}
		defer func() {
			call.Status = w.status
			s.calls[ep].add(call)
		}()
		f, pay := s.fault(ep)
		tok, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		k := s.keys[strings.TrimSpace(tok)]
		var a *account // known before the faults, for their rate-limit headers
		if bearer && k != nil {
			a = s.accounts[k.Account]
		}
		if f.Latency > 0 {
			t := time.NewTimer(f.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				w.status = 499 // client went away
				return
			}
		}
		if s.roll(f.RateLimitRate) {
			s.peekLimit(w.Header(), a)
			tooMany(w, cmp.Or(f.RetryAfter, time.Second))
			return
		}
		if s.roll(f.ErrorRate) {
			s.peekLimit(w.Header(), a)
			st := cmp.Or(f.ErrorStatus, http.StatusServiceUnavailable)
			code := "SERVICE_UNAVAILABLE"
			if st != http.StatusServiceUnavailable {
				code = "INTERNAL_ERROR"
			}
			writeErr(w, st, code, "simulated failure")
			return
		}
		if a == nil {
			writeErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "Missing or invalid API key")
			return
		}
		call.Account = k.Account
		if k.Terminated {
			s.peekLimit(w.Header(), a)
			writeErr(w, http.StatusForbidden, "ACCOUNT_TERMINATED", "Account has been terminated")
			return
		}
		if !s.allow(w, a) {
			return
		}
		h(w, r, request{key: k, acct: a, fault: f, pay: pay})
	}
}

// allow counts one request against the account's limit and sets the rate-limit headers; on false it has
// answered 429.
func (s *Simulator) allow(w http.ResponseWriter, a *account) bool {
	now := s.cfg.Now()
	switch {
	case s.unmetered.Load():
	case s.v2() && s.cfg.RPM > 0:
		st := a.window.take(now, s.cfg.RPM, false)
		setLimitHeaders(w.Header(), st)
		if st.retryAfter > 0 {
			tooMany(w, st.retryAfter)
			return false
		}
	case a.limiter != nil:
		res := a.limiter.ReserveN(now, 1)
		d := res.DelayFrom(now)
		if d > 0 {
			res.CancelAt(now)
		}
		if s.limitHeaders() {
			setLimitHeaders(w.Header(), s.bucketState(a, now))
		}
		if d > 0 {
			tooMany(w, d)
			return false
		}
	}
	return true
}

func tooMany(w http.ResponseWriter, d time.Duration) {
	secs := strconv.Itoa(int(math.Ceil(max(d, time.Second).Seconds())))
	w.Header().Set("Retry-After", secs)
	w.Header().Set("X-Ratelimit-Reset", secs)
	if w.Header().Get("X-Ratelimit-Limit") != "" {
		w.Header().Set("X-Ratelimit-Remaining", "0")
	}
	writeErr(w, http.StatusTooManyRequests, "RATE_LIMITED", "Rate limit exceeded")
}

func (k *Key) has(scope string) bool { return slices.Contains(k.Scopes, scope) }

// submit serves POST /api/v1/moderate/{modality}.
func (s *Simulator) submit(w http.ResponseWriter, r *http.Request, req request) {
	modality := r.PathValue("modality")
	if s.v2() && slices.Contains(retiredV2, modality) {
		retired(w, modality)
		return
	}
	field, ok := s.cfg.Modalities[modality]
	if !ok {
		writeErr(w, http.StatusNotFound, "NOT_FOUND", "Unknown endpoint")
		return
	}
	if !req.key.has("moderate:" + modality) {
		writeErr(w, http.StatusForbidden, "FORBIDDEN", "API key lacks scope moderate:"+modality)
		return
	}
	if req.pay {
		writeErr(w, http.StatusPaymentRequired, "PAYMENT_REQUIRED", "Insufficient credit balance")
		return
	}
	if e := s.parseSubmission(w, r, modality, field); e != nil {
		writeErr(w, e.status, e.code, e.msg)
		return
	}
	value := strings.TrimSpace(r.PostFormValue(field))
	hook := strings.TrimSpace(r.PostFormValue("webhook_url"))
	if hook != "" && !httpURL(hook) {
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", "webhook_url must be an http or https URL")
		return
	}
	var marks string
	for _, vs := range r.PostForm {
		for _, v := range vs {
			if strings.Contains(v, "sim:") {
				marks += v
			}
		}
	}
	media := strings.HasSuffix(field, "_url") || (s.v2() && (field == "image" || field == "video"))
	if s.v2() && isMediaFieldV2(field) {
		if e := probeV2(field, value); e != nil {
			writeErr(w, e.status, e.code, e.msg)
			return
		}
	}
	nj := newJob{typ: modality, media: media, hook: hook, marks: marks}
	if !strings.HasSuffix(field, "_url") && !(s.v2() && isMediaFieldV2(field)) {
		nj.prompt = value // the text judged: the export's prompt column
	}
	if s.roll(req.fault.StatusUnknownRate) {
		id := newID() // the job_id it would have had
		if !s.roll(req.fault.StatusUnknownLostRate) {
			id = s.create(req.key, nj).id
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "SUBMISSION_STATUS_UNKNOWN",
			"message": "Submission status unknown; poll the job before resubmitting", "statusCode": 503, "job_id": id})
		return
	}
	j := s.create(req.key, nj)
	writeJSON(w, http.StatusAccepted, map[string]string{"job_id": j.id, "status": "queued"})
}

// parseSubmission parses the form and checks its required field, and in v2 the form rules of the newer
// contract; a media field must be a public http(s) URL.
func (s *Simulator) parseSubmission(w http.ResponseWriter, r *http.Request, modality, field string) *submitError {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	ct := r.Header.Get("Content-Type")
	var err error
	switch {
	case strings.HasPrefix(ct, "multipart/form-data"):
		err = r.ParseMultipartForm(maxForm)
	case strings.HasPrefix(ct, "application/x-www-form-urlencoded"):
		err = r.ParseForm()
	default:
		err = errors.New("Content-Type must be multipart/form-data or application/x-www-form-urlencoded")
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) && s.v2() {
			return &submitError{status: http.StatusRequestEntityTooLarge, code: "PAYLOAD_TOO_LARGE",
				msg: fmt.Sprintf("request body over %d bytes", maxForm)}
		}
		return badRequest(err.Error())
	}
	if s.v2() {
		if e := checkFormV2(modality, field, r.PostForm); e != nil {
			return e
		}
	}
	value := strings.TrimSpace(r.PostFormValue(field))
	if value == "" {
		return badRequest(field + " is required")
	}
	if strings.HasSuffix(field, "_url") || (s.v2() && isMediaFieldV2(field)) {
		if err := publicURL(value); err != nil {
			return badRequest(field + ": " + err.Error())
		}
	}
	return nil
}

// getJob serves GET /api/v1/job/{id}.
func (s *Simulator) getJob(w http.ResponseWriter, r *http.Request, req request) {
	if !req.key.has(ScopeJobs) {
		writeErr(w, http.StatusForbidden, "FORBIDDEN", "API key lacks scope job:read")
		return
	}
	s.mu.RLock()
	j := s.jobs[r.PathValue("id")]
	var b []byte
	if j != nil && j.account == req.key.Account {
		b = s.jobJSON(j)
	}
	s.mu.RUnlock()
	if b == nil {
		writeErr(w, http.StatusNotFound, "JOB_NOT_FOUND", "Job not found")
		return
	}
	writeRaw(w, http.StatusOK, b)
}

// listJobs serves GET /api/v1/jobs.
func (s *Simulator) listJobs(w http.ResponseWriter, r *http.Request, req request) {
	if !req.key.has(ScopeJobs) {
		writeErr(w, http.StatusForbidden, "FORBIDDEN", "API key lacks scope job:read")
		return
	}
	f, msg := s.parseListFilter(r.URL.Query())
	if msg != "" {
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", msg)
		return
	}
	items := make([]json.RawMessage, 0, f.limit)
	total := 0
	s.mu.RLock()
	js := req.acct.jobs
	for i := len(js) - 1; i >= 0; i-- { // newest first
		if !f.matches(js[i]) {
			continue
		}
		if total >= f.offset && len(items) < f.limit {
			items = append(items, s.jobJSON(js[i]))
		}
		total++
	}
	s.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{"jobs": items, "total": total, "limit": f.limit, "offset": f.offset})
}

// listFilter is a GET /jobs query.
type listFilter struct {
	statuses      []string
	typ, decision string
	search        string
	from, to      time.Time
	limit, offset int
}

// matches reports whether j passes the filter. Called with s.mu held.
func (f listFilter) matches(j *job) bool {
	switch {
	case len(f.statuses) > 0 && !slices.Contains(f.statuses, j.status),
		f.typ != "" && j.typ != f.typ,
		f.decision == "pass" && !(j.status == "completed" && !j.prohibited),
		f.decision == "reject" && !(j.status == "completed" && j.prohibited),
		f.search != "" && !strings.HasPrefix(j.id, f.search),
		!f.from.IsZero() && j.created.Before(f.from),
		!f.to.IsZero() && !j.created.Before(f.to):
		return false
	}
	return true
}

// parseListFilter reads a GET /jobs query; a bad parameter is the 400 message.
func (s *Simulator) parseListFilter(q url.Values) (listFilter, string) {
	f := listFilter{limit: 20, typ: q.Get("type"), decision: q.Get("decision"), search: q.Get("search")}
	if v := q.Get("status"); v != "" {
		for st := range strings.SplitSeq(v, ",") {
			st = strings.TrimSpace(st)
			if !slices.Contains([]string{"queued", "processing", "completed", "failed"}, st) {
				return f, "invalid status " + strconv.Quote(st)
			}
			f.statuses = append(f.statuses, st)
		}
	}
	if _, ok := s.cfg.Modalities[f.typ]; f.typ != "" && !ok && f.typ != "pre" && f.typ != "post" {
		return f, "invalid type " + strconv.Quote(f.typ)
	}
	if f.decision != "" && f.decision != "pass" && f.decision != "reject" {
		return f, "decision must be pass or reject"
	}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &f.from}, {"to", &f.to}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, p.name + " must be an ISO 8601 date-time"
			}
			*p.t = t
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return f, "limit must be between 1 and 100"
		}
		f.limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, "offset must be a non-negative integer"
		}
		f.offset = n
	}
	return f, ""
}

// register serves POST /api/v1/webhook/register.
func (s *Simulator) register(w http.ResponseWriter, r *http.Request, req request) {
	var body struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxForm)).Decode(&body); err != nil {
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", "body must be JSON {\"url\": ...}")
		return
	}
	if body.URL != "" && !httpURL(body.URL) {
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", "url must be an http or https URL")
		return
	}
	s.mu.Lock()
	req.acct.webhook = body.URL
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"url": body.URL})
}

// unregister serves DELETE /api/v1/webhook/register (v2): the account's URL is detached.
func (s *Simulator) unregister(w http.ResponseWriter, _ *http.Request, req request) {
	s.mu.Lock()
	req.acct.webhook = ""
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"url": ""})
}

func (s *Simulator) health(w http.ResponseWriter, r *http.Request) {
	s.calls[EndpointHealth].add(Call{At: s.cfg.Now(), Method: r.Method, Path: r.URL.RequestURI(), Status: 200})
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Simulator) notFound(w http.ResponseWriter, r *http.Request) {
	s.calls[EndpointOther].add(Call{At: s.cfg.Now(), Method: r.Method, Path: r.URL.RequestURI(), Status: 404})
	writeErr(w, http.StatusNotFound, "NOT_FOUND", "Unknown endpoint")
}

func httpURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// publicURL rejects non-http(s) URLs and literal private, loopback, link-local or unspecified hosts.
// It does no DNS lookup.
func publicURL(raw string) error {
	if !httpURL(raw) {
		return errors.New("must be an http or https URL")
	}
	u, _ := url.Parse(raw)
	h := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return errors.New("must not point to a private or loopback address")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		a = a.Unmap()
		if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsUnspecified() ||
			a.IsMulticast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
			return errors.New("must not point to a private or loopback address")
		}
	}
	return nil
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, struct {
		Error      string `json:"error"`
		Message    string `json:"message"`
		StatusCode int    `json:"statusCode"`
	}{code, msg, status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"INTERNAL_ERROR","message":"encode","statusCode":500}`)
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b) //nolint:errcheck // the client went away
}

// newID returns a random UUID string.
func newID() string { return uuid.NewString() }
