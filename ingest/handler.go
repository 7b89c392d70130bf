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
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

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

// Handler is the ingest role's request handler. [Handler.Serve] serves
//
//	POST /webhook and POST /webhook/{modality}   store the webhook in JetStream, then answer
//	GET  /healthz                                 200 while the process is alive
//	GET  /readyz                                  200 while Config.Ready is true and shutdown has not started
//	GET  /metrics                                 Prometheus metrics of Config.Gatherer
//
// It is safe for concurrent use.
type Handler struct {
	cfg     Config
	log     zerolog.Logger
	metrics *metrics
	// modalities maps each path modality to itself, so a look-up by the path's bytes yields a string
	// without allocating one.
	modalities map[string]string
	// tokenSum is the SHA-256 of Config.Token, compared in constant time with that of ?token=.
	tokenSum [sha256.Size]byte
	// secret is the HMAC key parsed from Config.Secret; nil when webhooks are not signed.
	secret []byte
	// subjects maps each modality ("" included) to its WEBHOOKS subject, built once.
	subjects   map[string]string
	slots      chan struct{}
	retryAfter string
	metricsH   fasthttp.RequestHandler
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
		modalities: make(map[string]string, len(cfg.Modalities)),
		subjects:   map[string]string{"": contract.WebhookSubject("")},
		tokenSum:   sha256.Sum256([]byte(cfg.Token)),
		slots:      make(chan struct{}, cfg.MaxInFlight),
		retryAfter: strconv.Itoa(int(math.Ceil(cfg.RetryAfter.Seconds()))),
	}
	for _, mod := range cfg.Modalities {
		h.modalities[mod] = mod
		h.subjects[mod] = contract.WebhookSubject(mod)
	}
	if cfg.Secret != "" {
		h.secret, _ = ParseSecret(cfg.Secret) // checked by Validate
	}
	if cfg.Gatherer != nil {
		h.metricsH = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	return h, nil
}

// SetShuttingDown makes /readyz answer 503 from now on, so a load balancer stops sending webhooks while
// in-flight ones finish. Webhooks that still arrive are handled normally. It is idempotent.
func (h *Handler) SetShuttingDown() { h.shuttingDown.Store(true) }

// Ready reports what /readyz answers: Config.Ready is true and shutdown has not started.
func (h *Handler) Ready() bool { return !h.shuttingDown.Load() && h.cfg.Ready() }

// Serve routes the request; it is a fasthttp.RequestHandler.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx) {
	switch p := ctx.Path(); {
	case string(p) == PathWebhook:
		h.serveWebhook(ctx, nil)
	case bytes.HasPrefix(p, webhookPrefix):
		h.serveWebhook(ctx, p[len(webhookPrefix):])
	case string(p) == PathHealthz:
		if !allowGet(ctx) {
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, []byte(`{"status":"ok"}`))
	case string(p) == PathReadyz:
		if !allowGet(ctx) {
			return
		}
		if !h.Ready() {
			h.writeError(ctx, ErrNotReady)
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, []byte(`{"status":"ready"}`))
	case string(p) == PathMetrics && h.metricsH != nil:
		if !allowGet(ctx) {
			return
		}
		h.metricsH(ctx)
	default:
		h.writeError(ctx, fmt.Errorf("%w: %s", ErrNotFound, text.Truncate(string(p), 64)))
	}
}

// webhookPrefix begins the path of POST /webhook/{modality}.
var webhookPrefix = []byte(PathWebhook + "/")

// allowGet answers 405 to anything but GET and HEAD.
func allowGet(ctx *fasthttp.RequestCtx) bool {
	if ctx.IsGet() || ctx.IsHead() {
		return true
	}
	ctx.Response.Header.Set("Allow", "GET, HEAD")
	writeErrorBody(ctx, fmt.Errorf("%w: %s (use GET)", ErrMethod, text.Truncate(string(ctx.Method()), 16)))
	return false
}

// serveWebhook handles one webhook: pathModality is the {modality} path segment, nil for POST /webhook.
func (h *Handler) serveWebhook(ctx *fasthttp.RequestCtx, pathModality []byte) {
	receivedAt := h.cfg.Now().UTC()
	modality, id, ack, err := h.ingest(ctx, pathModality, receivedAt)
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
		// The request URI is never logged: it may carry ?token=.
		ev.Str("job_id", id).Str("modality", text.Truncate(string(pathModality), 64)).Int("status", status).
			Str("remote_addr", ctx.RemoteAddr().String()).Err(err).Msg("webhook rejected")
		h.writeError(ctx, err)
		return
	}
	outcome := outcomeAccepted
	if ack.Duplicate {
		outcome = outcomeDuplicate
	}
	h.metrics.count(outcome)
	if ev := h.log.Debug(); ev.Enabled() {
		ev.Str("job_id", id).Str("modality", modality).Str("subject", h.subjects[modality]).
			Int("status", fasthttp.StatusOK).Uint64("seq", ack.Sequence).Bool("duplicate", ack.Duplicate).Msg("webhook stored")
	}
	// id is a validated UUID (hex and hyphens), so it needs no JSON escaping. The body is appended to the
	// response's own pooled buffer.
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.Response.AppendBodyString(`{"job_id":"`)
	ctx.Response.AppendBodyString(id)
	ctx.Response.AppendBodyString(`","duplicate":`)
	if ack.Duplicate {
		ctx.Response.AppendBodyString("true}\n")
	} else {
		ctx.Response.AppendBodyString("false}\n")
	}
}

// ingest runs the webhook rules in order, cheapest first, and publishes. It returns the path's modality
// once it is known to be one, and the job_id once known.
func (h *Handler) ingest(ctx *fasthttp.RequestCtx, pathModality []byte, receivedAt time.Time) (modality, id string, _ *jetstream.PubAck, _ error) {
	modality, signed, err := h.admit(ctx, pathModality, receivedAt)
	if err != nil {
		return "", "", nil, err
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

	body := ctx.PostBody()
	id, err = h.checkWebhook(body, signed)
	if err != nil {
		return modality, "", nil, err
	}
	msg := h.message(ctx, modality, id, receivedAt)
	msg.Data = body
	ack, err := h.store(msg)
	if err != nil {
		return modality, id, nil, fmt.Errorf("%w: store webhook %s: %w", ErrUnavailable, id, err)
	}
	return modality, id, ack, nil
}

// admit makes the checks that need no body: route, method, token, signature headers, media type, size,
// NATS and the stream's room. It returns the path's modality, and the signature headers to verify the
// body with.
func (h *Handler) admit(ctx *fasthttp.RequestCtx, pathModality []byte, receivedAt time.Time) (string, signedHeaders, error) {
	var signed signedHeaders
	modality, ok := h.modalities[string(pathModality)]
	if pathModality != nil && !ok {
		return "", signed, fmt.Errorf("%w %q: use one of %s", ErrUnknownModality, text.Truncate(string(pathModality), 64),
			strings.Join(h.cfg.Modalities, ", "))
	}
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", fasthttp.MethodPost)
		return modality, signed, fmt.Errorf("%w: %s (use POST)", ErrMethod, text.Truncate(string(ctx.Method()), 16))
	}
	if h.cfg.Token != "" {
		got := sha256.Sum256(ctx.QueryArgs().Peek("token"))
		if subtle.ConstantTimeCompare(got[:], h.tokenSum[:]) != 1 {
			return modality, signed, ErrUnauthorized
		}
	}
	if h.secret != nil {
		var err error
		if signed, err = checkSignatureHeaders(&ctx.Request.Header, receivedAt, h.cfg.SignatureTolerance); err != nil {
			return modality, signed, err
		}
	}
	if err := checkMediaType(ctx.Request.Header.ContentType()); err != nil {
		return modality, signed, err
	}
	if n := len(ctx.PostBody()); int64(n) > h.cfg.MaxBody {
		return modality, signed, fmt.Errorf("%w: %d bytes is over %d", ErrTooLarge, n, h.cfg.MaxBody)
	}
	if !h.cfg.Ready() {
		return modality, signed, fmt.Errorf("%w: NATS not connected", ErrUnavailable)
	}
	if h.cfg.Overloaded != nil && h.cfg.Overloaded() {
		return modality, signed, ErrOverloaded
	}
	return modality, signed, nil
}

// checkWebhook checks the body: the signature, the job id, and, for a webhook nothing vouches for, room in
// the slow lane. It returns the job id.
func (h *Handler) checkWebhook(body []byte, signed signedHeaders) (string, error) {
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

// maxHeaders is the most headers [Handler.message] sets.
const maxHeaders = 7

// message is the webhook's message without its data: subject and headers. The header values share one
// backing array, so the headers cost one allocation besides the map.
func (h *Handler) message(ctx *fasthttp.RequestCtx, modality, id string, receivedAt time.Time) *nats.Msg {
	vals := make([]string, 0, maxHeaders)
	hdr := make(nats.Header, maxHeaders)
	set := func(k, v string) {
		vals = append(vals, v)
		hdr[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(jetstream.MsgIDHeader, id)
	set(jetstream.ExpectedStreamHeader, contract.StreamWebhooks)
	set(contract.HeaderReceivedAt, receivedAt.Format(time.RFC3339Nano))
	set(contract.HeaderRemoteAddr, ctx.RemoteAddr().String())
	if modality != "" {
		set(contract.HeaderModality, modality)
	}
	if d := deliveryID(&ctx.Request.Header); d != "" {
		set(contract.HeaderDeliveryID, d)
	}
	switch {
	case h.secret != nil:
		set(contract.HeaderAuthenticated, contract.AuthenticatedSignature)
	case h.cfg.Token != "":
		set(contract.HeaderAuthenticated, contract.AuthenticatedToken)
	}
	return &nats.Msg{Subject: h.subjects[modality], Header: hdr}
}

// maxDeliveryID bounds the delivery id kept in a header.
const maxDeliveryID = 128

// deliveryID is the upstream's id of this delivery, for tracing: X-Omnifence-Delivery-Id (v2), else the
// Standard Webhooks webhook-id; "" when neither is there. It is kept only when printable ASCII.
func deliveryID(h *fasthttp.RequestHeader) string {
	d := h.Peek(contract.UpstreamHeaderDeliveryID)
	if len(d) == 0 {
		d = h.Peek(HeaderWebhookID)
	}
	if len(d) > maxDeliveryID {
		return ""
	}
	for _, c := range d {
		if c < 0x21 || c > 0x7e {
			return ""
		}
	}
	return string(d)
}

// checkMediaType accepts no Content-Type (the upstream does not document its headers), application/json and
// application/*+json, with any parameters.
func checkMediaType(b []byte) error {
	if len(b) == 0 || string(b) == "application/json" {
		return nil
	}
	ct := string(b)
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return fmt.Errorf("%w, not %q", ErrMediaType, text.Truncate(ct, 64))
}

// writeError answers err through the error table, adding Retry-After to a 503.
func (h *Handler) writeError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrBusy) || errors.Is(err, ErrOverloaded) || errors.Is(err, ErrUnprovenFull) {
		ctx.Response.Header.Set("Retry-After", h.retryAfter)
	}
	writeErrorBody(ctx, err)
}

// errorBody is the JSON answer to a rejected request.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeErrorBody(ctx *fasthttp.RequestCtx, err error) {
	status, code, msg := errorStatus(err)
	b, _ := json.Marshal(errorBody{Error: code, Message: msg})
	writeJSON(ctx, status, b)
}

// contentTypeJSON is the Content-Type of every answer.
var contentTypeJSON = []byte("application/json")

// writeJSON answers status with body, a JSON value, and a newline.
func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.Response.ResetBody()
	ctx.Response.AppendBody(body)
	ctx.Response.AppendBodyString("\n")
}

// ServeError answers a request the server could not read, and counts it under its error code, as
// [Handler.Serve] counts webhooks; it is a ServerConfig.ErrorHandler.
func (h *Handler) ServeError(ctx *fasthttp.RequestCtx, err error) {
	err = requestError(err, h.cfg.MaxBody)
	_, code, _ := errorStatus(err)
	h.metrics.count(code)
	h.log.Info().Str("remote_addr", ctx.RemoteAddr().String()).Err(err).Msg("request not read")
	writeErrorBody(ctx, err)
}

// requestError is the error table's error for what the server met reading a request: headers over the
// bound, a body over maxBody, a read that timed out, or anything else unreadable.
func requestError(err error, maxBody int64) error {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.As(err, &small):
		return ErrHeadersTooLarge
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return fmt.Errorf("%w: over %d bytes", ErrTooLarge, maxBody)
	case errors.As(err, &netErr) && netErr.Timeout():
		return ErrReadTimeout
	default:
		return fmt.Errorf("%w: %w", ErrReadBody, err)
	}
}
