package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
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

	"github.com/evershield/bridge/internal/text"
	bjs "github.com/evershield/bridge/jetstream"
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

// Handler is the ingest role's http.Handler. It serves
//
//	POST /webhook and POST /webhook/{modality}   store the webhook in JetStream, then answer
//	GET  /healthz                                 200 while the process is alive
//	GET  /readyz                                  200 while Config.Ready is true and shutdown has not started
//	GET  /metrics                                 Prometheus metrics of Config.Gatherer
//
// It is safe for concurrent use.
type Handler struct {
	cfg        Config
	log        zerolog.Logger
	metrics    *metrics
	modalities map[string]bool
	// tokenSum is the SHA-256 of Config.Token, compared in constant time with that of ?token=.
	tokenSum [sha256.Size]byte
	// secret is the HMAC key parsed from Config.Secret; nil when webhooks are not signed.
	secret []byte
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
		subjects:   map[string]string{"": bjs.WebhookSubject("")},
		tokenSum:   sha256.Sum256([]byte(cfg.Token)),
		slots:      make(chan struct{}, cfg.MaxInFlight),
		retryAfter: strconv.Itoa(int(math.Ceil(cfg.RetryAfter.Seconds()))),
	}
	for _, mod := range cfg.Modalities {
		h.modalities[mod] = true
		h.subjects[mod] = bjs.WebhookSubject(mod)
	}
	if cfg.Secret != "" {
		h.secret, _ = ParseSecret(cfg.Secret) // checked by Validate
	}
	if cfg.Gatherer != nil {
		h.metricsH = promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})
	}
	return h, nil
}

// SetShuttingDown makes /readyz answer 503 from now on, so a load balancer stops sending webhooks while
// in-flight ones finish. Webhooks that still arrive are handled normally. It is idempotent.
func (h *Handler) SetShuttingDown() { h.shuttingDown.Store(true) }

// Ready reports what /readyz answers: Config.Ready is true and shutdown has not started.
func (h *Handler) Ready() bool { return !h.shuttingDown.Load() && h.cfg.Ready() }

// ServeHTTP routes the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == PathWebhook:
		h.serveWebhook(w, r, "")
	case strings.HasPrefix(p, PathWebhook+"/"):
		h.serveWebhook(w, r, p[len(PathWebhook)+1:])
	case p == PathHealthz:
		if !allowGet(w, r) {
			return
		}
		writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
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
		if !allowGet(w, r) {
			return
		}
		h.metricsH.ServeHTTP(w, r)
	default:
		h.writeError(w, fmt.Errorf("%w: %s", ErrNotFound, text.Truncate(p, 64)))
	}
}

// allowGet answers 405 to anything but GET and HEAD.
func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeErrorBody(w, fmt.Errorf("%w: %s (use GET)", ErrMethod, r.Method))
	return false
}

// serveWebhook handles one webhook: pathModality is the {modality} path segment, empty for POST /webhook.
func (h *Handler) serveWebhook(w http.ResponseWriter, r *http.Request, pathModality string) {
	start := time.Now()
	receivedAt := h.cfg.Now().UTC()
	id, ack, err := h.ingest(w, r, pathModality, receivedAt, start)
	if err != nil {
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
		// r.URL is never logged: it may carry ?token=.
		ev.Str("job_id", id).Str("modality", text.Truncate(pathModality, 64)).Int("status", status).
			Str("remote_addr", r.RemoteAddr).Err(err).Msg("webhook rejected")
		h.writeError(w, err)
		return
	}
	outcome := outcomeAccepted
	if ack.Duplicate {
		outcome = outcomeDuplicate
	}
	h.metrics.count(outcome)
	if ev := h.log.Debug(); ev.Enabled() { // spare the request path building the subject when nobody logs it
		ev.Str("job_id", id).Str("modality", pathModality).Str("subject", bjs.WebhookSubject(pathModality)).
			Int("status", http.StatusOK).Uint64("seq", ack.Sequence).Bool("duplicate", ack.Duplicate).Msg("webhook stored")
	}
	// id is a validated UUID (hex and hyphens), so it needs no JSON escaping. The body is built in one
	// allocation, newline included.
	b := make([]byte, 0, len(`{"job_id":"","duplicate":false}`)+len(id)+1)
	b = append(b, `{"job_id":"`...)
	b = append(b, id...)
	b = append(b, `","duplicate":`...)
	b = strconv.AppendBool(b, ack.Duplicate)
	b = append(b, "}\n"...)
	writeJSONLine(w, http.StatusOK, b)
}

// answerMargin is kept free between the end of the publish wait and the server's write deadline, for
// writing the answer.
const answerMargin = 500 * time.Millisecond

// ingest runs the webhook rules in order, cheapest first, and publishes. It returns the job_id once known.
// start is when the handler began, which is when net/http armed the connection's write deadline.
func (h *Handler) ingest(w http.ResponseWriter, r *http.Request, pathModality string, receivedAt, start time.Time) (string, *jetstream.PubAck, error) {
	signed, err := h.admit(w, r, pathModality, receivedAt)
	if err != nil {
		return "", nil, err
	}
	// The slot bounds memory (MaxInFlight bodies) and goroutines waiting for acks. It is taken before the
	// body is read and never waited for: a full house answers 503 at once.
	select {
	case h.slots <- struct{}{}:
	default:
		return "", nil, ErrBusy
	}
	h.metrics.inFlight.Inc()
	defer func() {
		h.metrics.inFlight.Dec()
		<-h.slots
	}()

	buf := bufPool.Get().(*bytes.Buffer)
	defer putBuf(buf)
	id, err := h.readWebhook(w, r, buf, signed)
	if err != nil {
		return "", nil, err
	}
	msg := h.message(r, pathModality, id, receivedAt)
	msg.Data = buf.Bytes()
	ack, err := h.store(r, msg, start)
	if err != nil {
		return id, nil, fmt.Errorf("%w: store webhook %s: %w", ErrUnavailable, id, err)
	}
	return id, ack, nil
}

// admit makes the checks that need no body: route, method, token, signature headers, media type,
// declared size, NATS and the stream's room. It returns the signature headers to verify the body with.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request, pathModality string, receivedAt time.Time) (signedHeaders, error) {
	var signed signedHeaders
	if r.URL.Path != PathWebhook && !h.modalities[pathModality] {
		return signed, fmt.Errorf("%w %q: use one of %s", ErrUnknownModality, text.Truncate(pathModality, 64),
			strings.Join(h.cfg.Modalities, ", "))
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return signed, fmt.Errorf("%w: %s (use POST)", ErrMethod, r.Method)
	}
	if h.cfg.Token != "" {
		got := sha256.Sum256([]byte(r.URL.Query().Get("token")))
		if subtle.ConstantTimeCompare(got[:], h.tokenSum[:]) != 1 {
			return signed, ErrUnauthorized
		}
	}
	if h.secret != nil {
		var err error
		if signed, err = checkSignatureHeaders(r.Header, receivedAt, h.cfg.SignatureTolerance); err != nil {
			return signed, err
		}
	}
	if err := checkMediaType(r.Header.Get("Content-Type")); err != nil {
		return signed, err
	}
	if r.ContentLength > h.cfg.MaxBody {
		return signed, fmt.Errorf("%w: Content-Length %d is over %d bytes", ErrTooLarge, r.ContentLength, h.cfg.MaxBody)
	}
	if !h.cfg.Ready() {
		return signed, fmt.Errorf("%w: NATS not connected", ErrUnavailable)
	}
	if h.cfg.Overloaded != nil && h.cfg.Overloaded() {
		return signed, ErrOverloaded
	}
	return signed, nil
}

// readWebhook reads the body into buf and checks it: the signature, the job id, and, for a webhook
// nothing vouches for, room in the slow lane. It returns the job id.
func (h *Handler) readWebhook(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer, signed signedHeaders) (string, error) {
	if err := h.readBody(w, r, buf); err != nil {
		return "", err
	}
	body := buf.Bytes()
	if h.secret != nil {
		if err := signed.verify(h.secret, body); err != nil {
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

// store publishes msg to WEBHOOKS and waits for the acknowledgement, within what is left of the
// answer's deadline.
func (h *Handler) store(r *http.Request, msg *nats.Msg, start time.Time) (*jetstream.PubAck, error) {
	// The answer must be written before the server's WriteTimeout, which runs from the handler's start:
	// a slow body (up to ReadTimeout) plus a full PublishTimeout could outlast it, and the upstream would
	// see a broken connection instead of an answer. So the wait is cut to what is left; with nothing
	// left the answer is 503 at once (the reconciler recovers the job).
	timeout := h.cfg.PublishTimeout
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && srv.WriteTimeout > 0 {
		timeout = min(timeout, time.Until(start.Add(srv.WriteTimeout-answerMargin)))
	}
	if timeout <= 0 {
		return nil, errors.New("no time left before the answer deadline")
	}
	// The sender hanging up must not cancel the publish: it completes or times out on its own, so the
	// outcome counted and logged is the real one. The publish needs none of the request's values.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pubStart := time.Now()
	ack, err := bjs.PublishMsg(ctx, h.cfg.Publisher, msg)
	h.metrics.publish.Observe(time.Since(pubStart).Seconds())
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", msg.Subject, err)
	}
	return ack, nil
}

// maxHeaders is the most headers [Handler.message] sets.
const maxHeaders = 7

// message is the webhook's message without its data: subject and headers. The header values share one
// backing array, so the headers cost one allocation besides the map.
func (h *Handler) message(r *http.Request, pathModality, id string, receivedAt time.Time) *nats.Msg {
	subject, ok := h.subjects[pathModality]
	if !ok {
		subject = bjs.WebhookSubject(pathModality)
	}
	vals := make([]string, 0, maxHeaders)
	hdr := make(nats.Header, maxHeaders)
	set := func(k, v string) {
		vals = append(vals, v)
		hdr[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(jetstream.MsgIDHeader, id)
	set(jetstream.ExpectedStreamHeader, bjs.StreamWebhooks)
	set(bjs.HeaderReceivedAt, receivedAt.Format(time.RFC3339Nano))
	set(bjs.HeaderRemoteAddr, r.RemoteAddr)
	if pathModality != "" {
		set(bjs.HeaderModality, pathModality)
	}
	if d := deliveryID(r.Header); d != "" {
		set(bjs.HeaderDeliveryID, d)
	}
	switch {
	case h.secret != nil:
		set(bjs.HeaderAuthenticated, bjs.AuthenticatedSignature)
	case h.cfg.Token != "":
		set(bjs.HeaderAuthenticated, bjs.AuthenticatedToken)
	}
	return &nats.Msg{Subject: subject, Header: hdr}
}

// maxDeliveryID bounds the delivery id kept in a header.
const maxDeliveryID = 128

// deliveryID is the upstream's id of this delivery, for tracing: X-Omnifence-Delivery-Id (v2), else the
// Standard Webhooks webhook-id; "" when neither is there. It is kept only when printable ASCII.
func deliveryID(h http.Header) string {
	d := h.Get(bjs.UpstreamHeaderDeliveryID)
	if d == "" {
		d = h.Get(HeaderWebhookID)
	}
	if len(d) > maxDeliveryID {
		return ""
	}
	for i := 0; i < len(d); i++ {
		if d[i] < 0x21 || d[i] > 0x7e {
			return ""
		}
	}
	return d
}

// readBody reads at most Config.MaxBody bytes of the body into buf.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) error {
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return fmt.Errorf("%w: over %d bytes", ErrTooLarge, h.cfg.MaxBody)
	}
	return fmt.Errorf("%w: %w", ErrReadBody, err)
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

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	writeJSONLine(w, status, append(body, '\n'))
}

// contentTypeJSON is the Content-Type of every answer. It is shared by every response: net/http copies
// the handler's header when the status is written and never appends in place (len equals cap).
var contentTypeJSON = []string{"application/json"}

// writeJSONLine answers status with line, a JSON body that ends in a newline. net/http adds the
// Content-Length itself, since the whole answer fits in its buffer (2 KiB) before anything is flushed.
func writeJSONLine(w http.ResponseWriter, status int, line []byte) {
	w.Header()["Content-Type"] = contentTypeJSON
	w.WriteHeader(status)
	_, _ = w.Write(line)
}

// bufPool recycles body buffers; PublishMsg copies the data into the connection's buffer before it returns.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuf keeps a large MaxBody from pinning big buffers in the pool.
const maxPooledBuf = 1 << 20

func putBuf(b *bytes.Buffer) {
	if b.Cap() > maxPooledBuf {
		return
	}
	b.Reset()
	bufPool.Put(b)
}
