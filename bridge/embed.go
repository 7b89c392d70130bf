package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/ingest"
)

// WithConn makes the bridge use nc, the caller's connection, instead of starting an embedded nats-server
// or dialing BRIDGE_NATS_URL (the BRIDGE_NATS_* settings are then unused). The bridge still provisions its
// streams and buckets on it (or checks them, with BRIDGE_PROVISION=false), in BRIDGE_JS_DOMAIN. It never drains or closes nc: when [App.Run] returns, the roles have
// stopped and taken their subscriptions back, and nc is flushed and left open. nc must be open, and
// should reconnect forever (nats.MaxReconnects(-1)), as the bridge's own connection does.
func WithConn(nc *nats.Conn) Option {
	return func(o *options) error {
		if nc == nil {
			return errors.New("WithConn: nil connection")
		}
		o.conn = nc
		return nil
	}
}

// WithRegisterer makes the bridge register its metrics with reg, the caller's, instead of a registry of
// its own. The Go and process collectors are then not added: they are the caller's (most programs have
// them already). [App.Metrics] and GET /metrics of [App.Handler] serve reg when it is also a
// prometheus.Gatherer (a *prometheus.Registry is), and nothing otherwise (Metrics is nil, /metrics 404).
// A metric name reg already holds stops [New] with an error; two bridges in one registry need
// prometheus.WrapRegistererWith, a label each. When Run returns, or New fails, the bridge unregisters
// from reg every collector it registered, so a stopped bridge leaves no stale series behind.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(o *options) error {
		if reg == nil {
			return errors.New("WithRegisterer: nil registerer")
		}
		o.registerer = reg
		return nil
	}
}

// WithTracerProvider makes the bridge trace with tp, the caller's (for the binary, [Tracing.Option] of
// the OTEL_* variables): a server span of each webhook (otelhttp, the child of the request's W3C
// traceparent), its verification span, a span of each submission, and the client span of each upstream
// call made in either. The bridge never shuts tp down. Without it the bridge makes no span, and the
// trace context that webhooks and submissions bring still travels to their results (docs/DESIGN.md,
// Trace context).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) error {
		if tp == nil {
			return errors.New("WithTracerProvider: nil provider")
		}
		o.tracer = tp
		return nil
	}
}

// WithoutListener makes the bridge bind no webhook listener (BRIDGE_HTTP_ADDR, BRIDGE_TLS_* are unused):
// the caller mounts [App.Handler] or [App.WebhookHandler] in its own server. BRIDGE_ADMIN_ADDR, empty by
// default, still binds when set.
//
// Shutdown then works as with the listener: when Run's ctx ends, /readyz answers 503 at once; the
// handlers take webhooks on for BRIDGE_SHUTDOWN_DELAY; requests in flight in them are waited for (up to
// 10 s); only then do the roles stop, in order. Readiness covers the roles, not the caller's server. A
// webhook that reaches the handlers after Run returned is refused 503 when the bridge dialed its own
// NATS (closed by then), and stored as usual on a caller's connection ([WithConn]). BRIDGE_PUBLIC_URL
// stays the caller's to set: submissions send webhooks to <it>/webhook/<modality>.
func WithoutListener() Option {
	return func(o *options) error {
		o.noListener = true
		return nil
	}
}

// Handler serves what the BRIDGE_HTTP_ADDR listener serves, for the caller to mount in its own server:
// POST /webhook and /webhook/{modality} (404 without the ingest role), GET /healthz, /readyz and
// /metrics ([App.Metrics]; 404 when nil). Mount it at the root, or under a prefix with
// http.StripPrefix. The server it is mounted in should bound reading a request (ReadTimeout 4 s, as the
// bridge's listener does), so that an answer reaches the upstream inside its 10 s, and the body
// (BRIDGE_MAX_BODY is enforced by the handler). It is safe for concurrent use.
func (a *App) Handler() http.Handler { return a.mounted.track(a.traced(a.routes(), true)) }

// WebhookHandler is the webhook endpoint alone, to mount under any pattern of the caller's
// http.ServeMux: with a {modality} wildcard (e.g. "POST /hooks/moderation/webhook/{modality}") the
// modality is taken from it ([ingest.Handler.Webhook]). Without the ingest role it answers 404.
func (a *App) WebhookHandler() http.Handler {
	if !a.cfg.Has(RoleIngest) {
		return notIngest
	}
	return a.mounted.track(a.traced(a.handler.Webhook(), false))
}

// routes is what the webhook listener serves, before BRIDGE_ADMIN_ADDR takes health and metrics off it.
func (a *App) routes() http.Handler {
	if !a.cfg.Has(RoleIngest) {
		return withoutWebhooks(a.handler)
	}
	return a.handler
}

// notIngest answers a webhook in a process without the ingest role.
var notIngest = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte(`{"error":"not_found","message":"this process does not run the ingest role"}` + "\n"))
})

// handlerRole stands in for the webhook listener under [WithoutListener], first in the stop order as
// the listener is. It serves from the start. When stopped, it turns readiness off, lets the handlers take
// webhooks on for the shutdown delay, and waits for the requests in flight in them, so that none is cut
// off by the roles and the NATS connection stopping behind it.
func (a *App) handlerRole() role {
	serving := make(chan struct{})
	close(serving)
	return role{"handler", func(ctx context.Context) error {
		<-ctx.Done()
		a.handler.SetShuttingDown()
		if d := a.cfg.ShutdownDelay; d > 0 {
			a.log.Info().Dur("delay", d).Msg("shutting down: the handler takes webhooks on through the shutdown delay")
			t := time.NewTimer(d)
			<-t.C
		}
		if n := a.mounted.wait(ingest.DefaultShutdownTimeout); n > 0 {
			return fmt.Errorf("%d requests still in flight after %v", n, ingest.DefaultShutdownTimeout)
		}
		return nil
	}, serving}
}

// mounted counts the requests in flight in the handlers the caller mounted, so that a stop can wait for
// them as http.Server.Shutdown does for the bridge's own listener.
type mounted struct {
	mu sync.Mutex // mu guards n and idle
	n  int
	// idle, when set, is closed once n is back to 0; set by wait.
	idle chan struct{}
}

func (m *mounted) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.n++
		m.mu.Unlock()
		defer m.done()
		h.ServeHTTP(w, r)
	})
}

func (m *mounted) done() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n--
	if m.n == 0 && m.idle != nil {
		close(m.idle)
		m.idle = nil
	}
}

// wait waits up to d for no request to be in flight, and returns how many still are. It has one caller,
// the handler role.
func (m *mounted) wait(d time.Duration) int {
	m.mu.Lock()
	if m.n == 0 {
		m.mu.Unlock()
		return 0
	}
	idle := make(chan struct{})
	m.idle = idle
	m.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
		return 0
	case <-t.C:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.n
	}
}

// borrow takes the caller's connection ([WithConn]) in place of starting or dialing NATS, and prepares
// JetStream on it.
func (n *natsSide) borrow(ctx context.Context, cfg Config, nc *nats.Conn) (*natsSide, error) {
	if nc.IsClosed() {
		return nil, errors.New("WithConn: the connection is closed")
	}
	n.nc, n.borrowed = nc, true
	if err := n.prepare(ctx, cfg); err != nil {
		return nil, err
	}
	return n, nil
}

// flush pushes out what the roles published last on a borrowed connection, which stays open.
func (n *natsSide) flush() {
	if err := n.nc.FlushTimeout(10 * time.Second); err != nil && !n.nc.IsClosed() {
		n.log.Warn().Err(err).Msg("nats flush on the caller's connection failed")
	}
}

// registry is where an App registers its metrics: a prometheus.Registry of its own, or the caller's
// Registerer ([WithRegisterer]). It remembers what the App registered, so that the App can take it back
// from a caller's registry ([registry.release]).
type registry struct {
	prometheus.Registerer
	// gatherer is what Metrics and GET /metrics serve: the own Registry, or the caller's Registerer when it
	// is also a Gatherer; nil otherwise.
	gatherer prometheus.Gatherer
	// owned is set for the App's own Registry.
	owned bool
	mu    sync.Mutex // mu guards added and err
	added []prometheus.Collector
	err   error
}

// newRegistry is a registry on the caller's reg, or, for a nil reg, on a Registry of the App's own with
// the Go and process collectors.
func newRegistry(reg prometheus.Registerer) *registry {
	if reg == nil {
		own := prometheus.NewRegistry()
		own.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		return &registry{Registerer: own, gatherer: own, owned: true}
	}
	r := &registry{Registerer: reg}
	if g, ok := reg.(prometheus.Gatherer); ok {
		r.gatherer = g
	}
	return r
}

// Register registers c and remembers it.
func (r *registry) Register(c prometheus.Collector) error {
	if err := r.Registerer.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.added = append(r.added, c)
	return nil
}

// MustRegister registers cs but does not panic: it keeps the first error, for New to return ([registry.Err]),
// since a caller's registry may already hold a metric of the same name.
func (r *registry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			r.mu.Lock()
			if r.err == nil {
				r.err = err
			}
			r.mu.Unlock()
		}
	}
}

// Err is the first error of MustRegister, or nil.
func (r *registry) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// release unregisters from a caller's registry every collector the App registered: a stopped App's
// series would be stale, and its gauges read an App that is gone. The App's own registry is left as it
// is, so that Metrics still gathers after Run.
func (r *registry) release() {
	if r.owned {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.added {
		r.Registerer.Unregister(c)
	}
	r.added = nil
}
