package ingest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/text"
	"github.com/evershield/bridge/natsx"
)

// Paths served by [Handler].
const (
	// PathWebhook takes webhooks; PathWebhook+"/{modality}" names the modality.
	PathWebhook = "/webhook"
	// PathHealthz answers 200 while the process is alive.
	PathHealthz = "/healthz"
	// PathReadyz answers 200 while NATS is usable and shutdown has not started.
	PathReadyz = "/readyz"
	// PathMetrics serves Prometheus metrics.
	PathMetrics = "/metrics"
)

// Handler is the ingest role's request handler, an http.Handler. It serves
//
//	POST /webhook and POST /webhook/{modality}   store the webhook in JetStream, then answer
//	GET  /healthz                                 200 while the process is alive
//	GET  /readyz                                  200 while Config.Ready and Serving are true and shutdown has not started
//	GET  /metrics                                 Prometheus metrics of Config.Gatherer
//
// [Handler.Webhook] is the webhook endpoint alone, to mount in another mux. It is safe for concurrent use.
type Handler struct {
	cfg     Config
	log     zerolog.Logger
	metrics *metrics
	// modalities is the set of path modalities.
	modalities map[string]bool
	// tokenSum is the SHA-256 of Config.Token, compared in constant time with that of ?token=.
	tokenSum [sha256.Size]byte
	// prevTokenSum is the SHA-256 of Config.PreviousToken, compared as tokenSum is when hasPrevToken.
	prevTokenSum [sha256.Size]byte
	hasPrevToken bool
	// secret is the HMAC key parsed from Config.Secret; nil when webhooks are not signed.
	secret []byte
	// prevSecret is the HMAC key parsed from Config.PreviousSecret; nil outside a rotation.
	prevSecret []byte
	// subjects maps each modality ("" included) to its WEBHOOKS subject, built once.
	subjects   map[string]string
	slots      chan struct{}
	retryAfter string
	metricsH   http.Handler
	// shuttingDown is set by SetShuttingDown; readiness is false from then on.
	shuttingDown atomic.Bool
}

// New checks cfg, registers the metrics and returns a Handler.
func New(cfg Config) (*Handler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	h := &Handler{
		cfg:        cfg,
		log:        cfg.Log.With().Str("component", "ingest").Logger(),
		metrics:    m,
		modalities: make(map[string]bool, len(cfg.Modalities)),
		subjects:   map[string]string{"": cfg.Names.WebhookSubject("")},
		tokenSum:   sha256.Sum256([]byte(cfg.Token)),
		slots:      make(chan struct{}, cfg.MaxInFlight),
		retryAfter: strconv.Itoa(int(math.Ceil(cfg.RetryAfter.Seconds()))),
	}
	for _, mod := range cfg.Modalities {
		h.modalities[mod] = true
		h.subjects[mod] = cfg.Names.WebhookSubject(mod)
	}
	if cfg.Secret != "" {
		h.secret, _ = ParseSecret(cfg.Secret) // checked by Validate
	}
	if cfg.PreviousToken != "" {
		h.prevTokenSum, h.hasPrevToken = sha256.Sum256([]byte(cfg.PreviousToken)), true
	}
	if cfg.PreviousSecret != "" {
		h.prevSecret, _ = ParseSecret(cfg.PreviousSecret) // checked by Validate
	}
	if cfg.Gatherer != nil {
		h.metricsH = promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})
	}
	return h, nil
}

// SetShuttingDown makes /readyz answer 503 from now on, so a load balancer stops sending webhooks while
// in-flight ones finish. Webhooks that still arrive are handled normally. It is idempotent.
func (h *Handler) SetShuttingDown() { h.shuttingDown.Store(true) }

// Ready reports what /readyz answers: Config.Ready and Config.Serving are true and shutdown has not
// started.
func (h *Handler) Ready() bool {
	return !h.shuttingDown.Load() && h.cfg.Ready() && (h.cfg.Serving == nil || h.cfg.Serving())
}

// ServeHTTP routes the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == PathWebhook:
		h.serveWebhook(w, r, "", false)
	case strings.HasPrefix(p, webhookPrefix):
		h.serveWebhook(w, r, p[len(webhookPrefix):], true)
	case p == PathHealthz:
		if allowGet(w, r) {
			writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
		}
	case p == PathReadyz:
		if !allowGet(w, r) {
			return
		}
		if !h.Ready() {
			h.writeError(w, ErrNotReady)
			return
		}
		writeJSON(w, http.StatusOK, []byte(`{"status":"ready"}`))
	case p == PathMetrics && h.metricsH != nil:
		if allowGet(w, r) {
			h.metricsH.ServeHTTP(w, r)
		}
	default:
		h.writeError(w, fmt.Errorf("%w: %s", ErrNotFound, text.Truncate(p, 64)))
	}
}

// Webhook is the webhook endpoint alone, to mount under any pattern of another http.ServeMux: with a
// {modality} wildcard in the pattern (e.g. "/hooks/moderation/{modality}") the modality is taken from it,
// as from POST /webhook/{modality}; without one the webhook has none, as at POST /webhook. The server it
// is mounted in should bound reading a request (ReadTimeout 4 s, as [Server] does), so that an answer
// reaches the upstream inside its 10 s.
func (h *Handler) Webhook() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mod := r.PathValue(pathValueModality)
		h.serveWebhook(w, r, mod, mod != "")
	})
}

// pathValueModality is the wildcard of a mount pattern that names the modality ([Handler.Webhook]).
const pathValueModality = "modality"

// webhookPrefix begins the path of POST /webhook/{modality}.
const webhookPrefix = PathWebhook + "/"

// allowGet answers 405 to anything but GET and HEAD.
func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeErrorBody(w, fmt.Errorf("%w: %s (use GET)", ErrMethod, text.Truncate(r.Method, 16)))
	return false
}

// serveWebhook handles one webhook: pathModality is the {modality} path segment, named whether there was one.
func (h *Handler) serveWebhook(w http.ResponseWriter, r *http.Request, pathModality string, named bool) {
	receivedAt := h.cfg.Now().UTC()
	modality, id, ack, err := h.ingest(w, r, webhookPath{pathModality, named}, receivedAt)
	if err != nil {
		h.reject(w, r, id, err)
		return
	}
	outcome := outcomeAccepted
	if ack.Duplicate {
		outcome = outcomeDuplicate
	}
	h.metrics.count(outcome)
	if ev := h.log.Debug(); ev.Enabled() {
		ev.Str("job_id", id).Str("modality", modality).Str("subject", h.subjects[modality]).
			Int("status", http.StatusOK).Uint64("seq", ack.Sequence).Bool("duplicate", ack.Duplicate).Msg("webhook stored")
	}
	// id is a validated UUID (hex and hyphens), so it needs no JSON escaping.
	b := make([]byte, 0, 80)
	b = append(b, `{"job_id":"`...)
	b = append(b, id...)
	b = append(b, `","duplicate":`...)
	b = strconv.AppendBool(b, ack.Duplicate)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// reject counts, logs and answers a webhook refused with err.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, id string, err error) {
	status, code, _ := errorStatus(err)
	h.metrics.count(code)
	var ev *zerolog.Event
	switch {
	case code == codeInternal:
		ev = h.log.Error()
	case status >= 500:
		ev = h.log.Warn()
	default:
		ev = h.log.Info()
	}
	// The request URI is never logged: its query may carry ?token=.
	ev.Str("job_id", id).Str("path", text.Truncate(r.URL.Path, 64)).Int("status", status).
		Str("remote_addr", r.RemoteAddr).Err(err).Msg("webhook rejected")
	if status == http.StatusRequestEntityTooLarge || status == http.StatusRequestTimeout {
		w.Header().Set("Connection", "close") // the rest of the body is not worth reading
	}
	h.writeError(w, err)
}

// webhookPath is what the path says of a webhook: the {modality} segment, and whether there was one.
type webhookPath struct {
	modality string
	named    bool
}

// ingest runs the webhook rules in order, cheapest first, and publishes. It returns the path's modality
// once it is known to be one, and the job_id once known.
func (h *Handler) ingest(w http.ResponseWriter, r *http.Request, path webhookPath, receivedAt time.Time) (modality, id string, _ *jetstream.PubAck, _ error) {
	modality, signed, err := h.admit(w, r, path, receivedAt)
	if err != nil {
		return "", "", nil, err
	}
	body, err := readBody(w, r, h.cfg.MaxBody)
	defer putBody(body)
	if err != nil {
		return modality, "", nil, err
	}
	// The slot bounds the goroutines waiting for acks. It is never waited for: a full house answers 503
	// at once.
	select {
	case h.slots <- struct{}{}:
	default:
		return modality, "", nil, ErrBusy
	}
	h.metrics.inFlight.Inc()
	defer func() {
		h.metrics.inFlight.Dec()
		<-h.slots
	}()

	id, err = h.checkWebhook(*body, signed)
	if err != nil {
		return modality, "", nil, err
	}
	msg := h.message(r, modality, id, receivedAt)
	msg.Data = *body
	ack, err := h.store(msg)
	if err != nil {
		return modality, id, nil, fmt.Errorf("%w: store webhook %s: %w", ErrUnavailable, id, err)
	}
	return modality, id, ack, nil
}

// admit makes the checks that need no body: route, method, token, signature headers, media type, sizes,
// NATS and the stream's room. It returns the path's modality, and the signature headers to verify the
// body with.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request, path webhookPath, receivedAt time.Time) (string, signedHeaders, error) {
	var signed signedHeaders
	if path.named && !h.modalities[path.modality] {
		return "", signed, fmt.Errorf("%w %q: use one of %s", ErrUnknownModality, text.Truncate(path.modality, 64),
			strings.Join(h.cfg.Modalities, ", "))
	}
	modality := path.modality
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return modality, signed, fmt.Errorf("%w: %s (use POST)", ErrMethod, text.Truncate(r.Method, 16))
	}
	if n := headerBytes(r); n > h.cfg.MaxHeaderBytes {
		return modality, signed, fmt.Errorf("%w: %d bytes is over %d", ErrHeadersTooLarge, n, h.cfg.MaxHeaderBytes)
	}
	if h.cfg.Token != "" && !h.tokenOK(r.URL.Query().Get("token")) {
		return modality, signed, ErrUnauthorized
	}
	if h.secret != nil {
		var err error
		if signed, err = checkSignatureHeaders(r.Header, receivedAt, h.cfg.SignatureTolerance); err != nil {
			return modality, signed, err
		}
	}
	if err := checkMediaType(r.Header.Get("Content-Type")); err != nil {
		return modality, signed, err
	}
	if r.ContentLength > h.cfg.MaxBody {
		return modality, signed, fmt.Errorf("%w: %d bytes is over %d", ErrTooLarge, r.ContentLength, h.cfg.MaxBody)
	}
	if !h.cfg.Ready() {
		return modality, signed, fmt.Errorf("%w: NATS not connected", ErrUnavailable)
	}
	if h.cfg.Overloaded != nil && h.cfg.Overloaded() {
		return modality, signed, ErrOverloaded
	}
	return modality, signed, nil
}

// tokenOK reports whether token is Config.Token or, during a rotation, Config.PreviousToken. Both are
// compared, in constant time, whichever matches: the time taken tells neither which one nor how much of it.
func (h *Handler) tokenOK(token string) bool {
	got := sha256.Sum256([]byte(token))
	ok := subtle.ConstantTimeCompare(got[:], h.tokenSum[:])
	if h.hasPrevToken {
		ok |= subtle.ConstantTimeCompare(got[:], h.prevTokenSum[:])
	}
	return ok == 1
}

// headerBytes is the size of the request line and headers as sent, near enough: what MaxHeaderBytes bounds.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4 + len("Host: \r\n") + len(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// bodies holds webhook bodies once read, so that reading one allocates nothing in the steady state.
var bodies = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooledBody is the largest buffer kept in bodies.
const maxPooledBody = 64 << 10

// readBody reads the request body whole, at most maxBody bytes, into a buffer from the pool; hand it back
// with putBody once published.
func readBody(w http.ResponseWriter, r *http.Request, maxBody int64) (*[]byte, error) {
	bp := bodies.Get().(*[]byte)
	b := (*bp)[:0]
	if r.ContentLength > int64(cap(b)) {
		b = make([]byte, 0, r.ContentLength) // at most maxBody: admit checked it
	}
	body := http.MaxBytesReader(w, r.Body, maxBody)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			*bp = b
			return bp, nil
		}
		if err != nil {
			*bp = b
			return bp, bodyError(err, maxBody)
		}
	}
}

// putBody hands a buffer of readBody back to the pool.
func putBody(bp *[]byte) {
	if cap(*bp) <= maxPooledBody {
		*bp = (*bp)[:0]
		bodies.Put(bp)
	}
}

// bodyError is the error table's error for a body that could not be read: over maxBody, not received in
// time, or anything else unreadable.
func bodyError(err error, maxBody int64) error {
	var netErr net.Error
	switch {
	case errors.As(err, new(*http.MaxBytesError)):
		return fmt.Errorf("%w: over %d bytes", ErrTooLarge, maxBody)
	case errors.As(err, &netErr) && netErr.Timeout():
		return ErrReadTimeout
	default:
		return fmt.Errorf("%w: %w", ErrReadBody, err)
	}
}

// checkWebhook checks the body: the signature, the job id, and, for a webhook nothing vouches for, room in
// the slow lane. It returns the job id.
func (h *Handler) checkWebhook(body []byte, signed signedHeaders) (string, error) {
	if h.secret != nil {
		if err := signed.verify(body, h.secret, h.prevSecret); err != nil {
			return "", err
		}
	}
	id, err := jobID(body)
	if err != nil {
		return "", err
	}
	// Without a token or secret nothing proves where a webhook came from: one of a job the bridge does
	// not track waits in the slow lane, whose backlog is bounded (an in-memory look-up, no round trip).
	if h.secret == nil && h.cfg.Token == "" && h.cfg.UnprovenFull != nil && h.cfg.UnprovenFull() &&
		(h.cfg.Known == nil || !h.cfg.Known(id)) {
		return "", ErrUnprovenFull
	}
	return id, nil
}

// store publishes msg to WEBHOOKS and waits for the acknowledgement, at most Config.PublishTimeout.
func (h *Handler) store(msg *nats.Msg) (*jetstream.PubAck, error) {
	// The sender hanging up must not cancel the publish: it completes or times out on its own, so the
	// outcome counted and logged is the real one.
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.PublishTimeout)
	defer cancel()
	pubStart := time.Now()
	ack, err := natsx.PublishMsg(ctx, h.cfg.Publisher, msg)
	h.metrics.publish.Observe(time.Since(pubStart).Seconds())
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", msg.Subject, err)
	}
	return ack, nil
}

// maxHeaders is the most headers [Handler.message] sets; the last two, the trace context, are rare, and
// the map is sized without them (a map of up to 8 is one allocation, of 9 several).
const maxHeaders = 9

// mapHeaders is the size the header map is made with: the headers a webhook without a trace context has.
const mapHeaders = maxHeaders - 2

// message is the webhook's message without its data: subject and headers. The header values share one
// backing array, so the headers cost one allocation besides the map.
func (h *Handler) message(r *http.Request, modality, id string, receivedAt time.Time) *nats.Msg {
	vals := make([]string, 0, maxHeaders)
	hdr := make(nats.Header, mapHeaders)
	set := func(k, v string) {
		vals = append(vals, v)
		hdr[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(jetstream.MsgIDHeader, id)
	set(jetstream.ExpectedStreamHeader, h.cfg.Names.StreamWebhooks)
	set(contract.HeaderReceivedAt, receivedAt.Format(time.RFC3339Nano))
	set(contract.HeaderRemoteAddr, r.RemoteAddr)
	if modality != "" {
		set(contract.HeaderModality, modality)
	}
	if d := deliveryID(r.Header); d != "" {
		set(contract.HeaderDeliveryID, d)
	}
	switch {
	case h.secret != nil:
		set(contract.HeaderAuthenticated, contract.AuthenticatedSignature)
	case h.cfg.Token != "":
		set(contract.HeaderAuthenticated, contract.AuthenticatedToken)
	}
	if t := traceOf(r); t.Parent != "" {
		set(contract.HeaderTraceParent, t.Parent)
		if t.State != "" {
			set(contract.HeaderTraceState, t.State)
		}
	}
	return &nats.Msg{Subject: h.subjects[modality], Header: hdr}
}

// httpTraceParent is the traceparent header as net/http keys it.
var httpTraceParent = http.CanonicalHeaderKey(contract.HeaderTraceParent)

// traceOf is the webhook's trace context, kept on the stored webhook: the span of the request's context
// (an OpenTelemetry handler in front of this one, such as the bridge's otelhttp), else the request's own
// W3C traceparent and tracestate, else none. Without either it costs a map look-up or two.
func traceOf(r *http.Request) contract.Trace {
	ctx := r.Context()
	if !trace.SpanContextFromContext(ctx).IsValid() {
		if len(r.Header[httpTraceParent]) == 0 {
			return contract.Trace{}
		}
		ctx = contract.TraceContext.Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	return contract.TraceOf(ctx)
}

// maxDeliveryID bounds the delivery id kept in a header.
const maxDeliveryID = 128

// deliveryID is the upstream's id of this delivery, for tracing: X-Omnifence-Delivery-Id (v2), else the
// Standard Webhooks webhook-id; "" when neither is there. It is kept only when printable ASCII.
func deliveryID(h http.Header) string {
	d := h.Get(contract.UpstreamHeaderDeliveryID)
	if d == "" {
		d = h.Get(HeaderWebhookID)
	}
	if len(d) > maxDeliveryID {
		return ""
	}
	for i := range len(d) {
		if c := d[i]; c < 0x21 || c > 0x7e {
			return ""
		}
	}
	return d
}

// checkMediaType accepts no Content-Type (the upstream does not document its headers), application/json and
// application/*+json, with any parameters.
func checkMediaType(ct string) error {
	if ct == "" || ct == "application/json" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return fmt.Errorf("%w, not %q", ErrMediaType, text.Truncate(ct, 64))
}

// writeError answers err through the error table, adding Retry-After to a 503.
func (h *Handler) writeError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrBusy) || errors.Is(err, ErrOverloaded) || errors.Is(err, ErrUnprovenFull) {
		w.Header().Set("Retry-After", h.retryAfter)
	}
	writeErrorBody(w, err)
}

// errorBody is the JSON answer to a rejected request.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeErrorBody(w http.ResponseWriter, err error) {
	status, code, msg := errorStatus(err)
	b, _ := json.Marshal(errorBody{Error: code, Message: msg})
	writeJSON(w, status, b)
}

// contentTypeJSON is the Content-Type of every answer.
const contentTypeJSON = "application/json"

// writeJSON answers status with body, a JSON value, and a newline.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
