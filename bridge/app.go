package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/ingest"
	bjs "github.com/evershield/bridge/jetstream"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/reconcile"
	"github.com/evershield/bridge/submit"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/verify"
)

// App is one bridge process: its NATS side, the HTTP listener and the configured roles.
type App struct {
	cfg     Config
	log     zerolog.Logger
	reg     *prometheus.Registry
	nats    *natsSide
	api     *upstream.Client
	budget  *budget.Shared
	pending *jobs.Pending
	http    *ingest.Server
	handler *ingest.Handler
	// roles run in one group; the first to fail stops all.
	roles []role
}

type role struct {
	name string
	run  func(context.Context) error
}

// options are the knobs that only in-process callers (demo, bench, tests) use.
type options struct {
	// publicFromListener sets BRIDGE_PUBLIC_URL to the bound HTTP address when it is empty.
	publicFromListener bool
	// reconcileInstance names the reconciler in its lease, and the process in the shared budget.
	reconcileInstance string
}

// Option is an optional knob of [New].
type Option func(*options) error

// WithPublicURLFromListener makes the bound HTTP address the public URL (BRIDGE_PUBLIC_URL) when the
// configuration has none: for a bridge in the same process as its upstream, such as the demo.
func WithPublicURLFromListener() Option {
	return func(o *options) error {
		o.publicFromListener = true
		return nil
	}
}

// WithReconcileInstance names this process's reconciler in its lease; it must be unique among the
// processes that share a NATS, and not empty.
func WithReconcileInstance(name string) Option {
	return func(o *options) error {
		if name == "" {
			return errors.New("reconcile instance: empty")
		}
		o.reconcileInstance = name
		return nil
	}
}

// New starts NATS (embedded or external), provisions the streams and buckets, binds the HTTP listener
// and builds every configured role, from a validated cfg ([Config.Validate]). Nothing serves until
// [App.Run], which also releases everything when it returns.
func New(ctx context.Context, cfg Config, log zerolog.Logger, opts ...Option) (_ *App, err error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
	}
	a := &App{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if a.nats, err = startNATS(ctx, cfg, log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.nats.close()
		}
	}()

	// Under v2 the upstream retries webhooks, so ingest refuses early (503) when WEBHOOKS is near its
	// limit instead of buffering; under v1 a refused webhook is only recovered by polling, so never.
	pressure, err := ingest.NewPressure(ingest.PressureConfig{Log: log,
		Info: func(ctx context.Context) (*jetstream.StreamInfo, error) {
			st, err := a.nats.js.Stream(ctx, bjs.StreamWebhooks)
			if err != nil {
				return nil, err
			}
			return st.Info(ctx)
		}})
	if err != nil {
		return nil, err
	}
	a.handler, err = ingest.New(ingest.Config{
		Publisher: a.nats.js, Log: log, Metrics: a.reg, Gatherer: a.reg, MaxBody: int64(cfg.MaxBody),
		Token: cfg.WebhookToken, Secret: cfg.WebhookSecret, Ready: a.nats.ready,
		Overloaded: func() bool { return a.contractV2() && pressure.High() },
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	registerReadiness(a.reg, a.handler)
	var h http.Handler = a.handler
	if !cfg.Has(RoleIngest) {
		h = withoutWebhooks(a.handler)
	}
	a.http, err = ingest.Listen(ingest.ServerConfig{
		Addr: cfg.HTTPAddr, Handler: h, Log: log, TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile,
		OnShutdown: a.handler.SetShuttingDown,
	})
	if errors.Is(err, ingest.ErrTLSKeyPair) {
		return nil, fmt.Errorf("%sTLS_CERT_FILE, %sTLS_KEY_FILE: %w", EnvPrefix, EnvPrefix, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%sHTTP_ADDR: %w", EnvPrefix, err)
	}
	defer func() {
		if err != nil {
			_ = a.http.Close()
		}
	}()
	a.roles = append(a.roles, role{"http", a.http.Run})
	if cfg.Has(RoleIngest) && cfg.APIContract != bjs.ContractV1 {
		a.roles = append(a.roles, role{"webhook-pressure", pressure.Run})
	}
	if o.publicFromListener && cfg.PublicURL == "" {
		scheme := "http"
		if cfg.TLSCertFile != "" {
			scheme = "https"
		}
		cfg.PublicURL = scheme + "://" + a.http.Addr().String()
		a.cfg.PublicURL = cfg.PublicURL
	}
	if !cfg.needsUpstream() {
		return a, nil
	}

	instance := o.reconcileInstance
	if instance == "" {
		instance = processName()
	}
	// Every upstream call of every process on this NATS draws on the one account-wide budget.
	a.budget, err = budget.New(budget.Config{
		KV: a.nats.res.Budget, RPM: int(cfg.APIRPM), Auto: cfg.APIRPM == RPMAuto, Burst: cfg.APIBurst,
		Instance: instance, Log: log, Metrics: a.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	if err := a.budget.Start(ctx); err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	defer func() {
		if err != nil {
			a.budget.Stop()
		}
	}()
	a.api, err = upstream.New(upstream.Config{
		BaseURL: cfg.APIURL, APIKey: cfg.APIKey, Contract: cfg.APIContract, Limiter: a.budget, Log: log, Metrics: a.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	store := jobs.NewStore(a.nats.res.Jobs)
	deadlines := cfg.deadlines()
	deliverer, err := jobs.NewDeliverer(jobs.DelivererConfig{JS: a.nats.js, Store: store, Deadlines: deadlines, Log: log})
	if err != nil {
		return nil, err
	}
	if cfg.Has(RoleVerify) {
		v, err := verify.New(verify.Config{
			JS: a.nats.js, API: a.api, Deliverer: deliverer, Log: log, Metrics: a.reg,
			UnknownRPM: cfg.UnknownRPM(),
		})
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		a.roles = append(a.roles, role{RoleVerify, v.Run})
	}
	if cfg.Has(RoleSubmit) {
		// The ledger of owed verifications: every pending job of the account, kept by a JOBS watch.
		a.pending = jobs.NewPending(store.KV(), log)
		a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bridge_budget_owed_jobs",
			Help: "Pending jobs of the account, each owing the upstream one verification; admission plans for them before it accepts a submission.",
		}, func() float64 { return float64(a.pending.Count()) }))
		s, err := submit.New(submit.Config{
			NC: a.nats.nc, JS: a.nats.js, Idempotency: a.nats.res.Idempotency, API: a.api, Store: store,
			Deadlines: deadlines, Log: log, Metrics: a.reg, PublicURL: cfg.PublicURL, Token: cfg.WebhookToken,
			Ledger: a.pending, PollInterval: cfg.PollInterval, Modalities: submit.ModalitiesFor(cfg.APIContract),
		})
		if err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
		a.roles = append(a.roles, role{RoleSubmit, s.Run})
	}
	if cfg.Has(RoleReconcile) {
		r, err := reconcile.New(reconcile.Config{
			Jobs: store, Leases: a.nats.res.Leases, Deliverer: deliverer, API: a.api,
			PollInterval: cfg.PollInterval, WebhookGrace: cfg.WebhookGrace, Log: log, Metrics: a.reg,
			Instance: instance,
		})
		if err != nil {
			return nil, fmt.Errorf("reconcile: %w", err)
		}
		a.roles = append(a.roles, role{RoleReconcile, r.Run})
	}
	return a, nil
}

// Run serves every role until ctx is cancelled or one fails, then shuts down in one fixed order, the
// order the roles were added in: the HTTP listener first (readiness off, in-flight webhooks answered after
// their ack), then the verifier's consumers, the submit service and the reconciler, each finishing its
// in-flight work before the next is stopped; then the NATS connection drains, and last the embedded
// server stops.
func (a *App) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	stops := make([]context.CancelFunc, len(a.roles))
	dones := make([]chan struct{}, len(a.roles))
	for i, r := range a.roles {
		// Not derived from gctx: the stopper below cancels the roles one by one.
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stops[i], dones[i] = cancel, make(chan struct{})
		g.Go(func() error {
			defer close(dones[i])
			if err := r.run(rctx); err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done() // a signal, or the first role to fail
		for i := range a.roles {
			stops[i]()
			<-dones[i]
		}
		return nil
	})
	if a.pending != nil {
		pctx, stopPending := context.WithCancel(context.WithoutCancel(ctx))
		defer stopPending()
		go a.pending.Run(pctx)
	}
	a.log.Info().Strs("roles", a.cfg.Roles).Str("http", a.http.Addr().String()).Msg("bridge running")
	err := g.Wait()
	if a.budget != nil {
		a.budget.Stop() // after the roles: their last calls still draw on it
	}
	a.nats.close()
	if err != nil {
		a.log.Error().Err(err).Msg("bridge stopped")
		return err
	}
	a.log.Info().Msg("bridge stopped")
	return nil
}

// contractV2 reports whether the upstream speaks v2: configured so, or decided by this process's client
// under auto.
func (a *App) contractV2() bool {
	return a.cfg.APIContract == bjs.ContractV2 || a.api != nil && a.api.Contract() == upstream.ContractV2
}

// Addr is the bound address of the webhook, health and metrics listener.
func (a *App) Addr() net.Addr { return a.http.Addr() }

// PublicURL is the base URL the upstream reaches this bridge at (BRIDGE_PUBLIC_URL, or the listener's
// with [WithPublicURLFromListener]); "" when there is none.
func (a *App) PublicURL() string { return a.cfg.PublicURL }

// Server is the embedded nats-server, or nil when the bridge uses an external NATS.
func (a *App) Server() *server.Server { return a.nats.srv }

// Metrics gathers the process's metrics, as GET /metrics serves them.
func (a *App) Metrics() prometheus.Gatherer { return a.reg }

// withoutWebhooks serves health and metrics but not webhooks, for processes without the ingest role.
func withoutWebhooks(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, ingest.PathWebhook) {
			http.Error(w, `{"error":"not_found","message":"this process does not run the ingest role"}`, http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// processName names this process in the shared budget and the reconciler's lease: host and a random
// suffix, so restarts and replicas never share a name.
func processName() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "bridge"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
