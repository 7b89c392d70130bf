package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/evershield/bridge/ingest"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/reconcile"
	"github.com/evershield/bridge/submit"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/verify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// app is one bridge process: its NATS side, the HTTP listener and the configured roles.
type app struct {
	cfg     Config
	log     zerolog.Logger
	reg     *prometheus.Registry
	nats    *natsSide
	api     *upstream.Client
	http    *ingest.Server
	handler *ingest.Handler
	// roles run in one group; the first to fail stops all.
	roles []role
}

type role struct {
	name string
	run  func(context.Context) error
}

// appOptions are knobs that only in-process callers (demo, tests) use.
type appOptions struct {
	// publicFromListener sets BRIDGE_PUBLIC_URL to the bound HTTP address when it is empty.
	publicFromListener bool
	// reconcileInstance names the reconciler in its lease.
	reconcileInstance string
}

// newApp starts NATS (embedded or external), provisions, binds the HTTP listener and builds every
// configured role. Nothing serves until run.
func newApp(ctx context.Context, cfg Config, log zerolog.Logger, opts appOptions) (_ *app, err error) {
	a := &app{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if a.nats, err = startNATS(ctx, cfg, log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.nats.close()
		}
	}()

	a.handler, err = ingest.New(ingest.Config{
		Publisher: a.nats.js, Log: log, Metrics: a.reg, Gatherer: a.reg, MaxBody: int64(cfg.MaxBody),
		Token: cfg.WebhookToken, Secret: cfg.WebhookSecret, Ready: a.nats.ready,
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	registerReadiness(a.reg, a.handler)
	var h http.Handler = a.handler
	if !cfg.has(roleIngest) {
		h = withoutWebhooks(a.handler)
	}
	a.http, err = ingest.Listen(ingest.ServerConfig{
		Addr: cfg.HTTPAddr, Handler: h, Log: log, TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile,
		OnShutdown: a.handler.SetShuttingDown,
	})
	if errors.Is(err, ingest.ErrTLSKeyPair) {
		return nil, fmt.Errorf("%sTLS_CERT_FILE, %sTLS_KEY_FILE: %w", envPrefix, envPrefix, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%sHTTP_ADDR: %w", envPrefix, err)
	}
	defer func() {
		if err != nil {
			_ = a.http.Close()
		}
	}()
	a.roles = append(a.roles, role{"http", a.http.Run})
	if opts.publicFromListener && cfg.PublicURL == "" {
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

	a.api, err = upstream.New(upstream.Config{
		BaseURL: cfg.APIURL, APIKey: cfg.APIKey, RPM: cfg.APIRPM, Burst: cfg.APIBurst, Log: log, Metrics: a.reg,
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
	if cfg.has(roleVerify) {
		v, err := verify.New(verify.Config{
			JS: a.nats.js, API: a.api, Deliverer: deliverer, Log: log, Metrics: a.reg,
			UnknownRPM: cfg.unknownJobRPM(),
		})
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		a.roles = append(a.roles, role{roleVerify, v.Run})
	}
	if cfg.has(roleSubmit) {
		s, err := submit.New(submit.Config{
			NC: a.nats.nc, JS: a.nats.js, Idempotency: a.nats.res.Idempotency, API: a.api, Store: store,
			Deadlines: deadlines, Log: log, Metrics: a.reg, PublicURL: cfg.PublicURL, Token: cfg.WebhookToken,
		})
		if err != nil {
			return nil, fmt.Errorf("submit: %w", err)
		}
		a.roles = append(a.roles, role{roleSubmit, s.Run})
	}
	if cfg.has(roleReconcile) {
		r, err := reconcile.New(reconcile.Config{
			Jobs: store, Leases: a.nats.res.Leases, Deliverer: deliverer, API: a.api,
			PollInterval: cfg.PollInterval, WebhookGrace: cfg.WebhookGrace, Log: log, Metrics: a.reg,
			Instance: opts.reconcileInstance,
		})
		if err != nil {
			return nil, fmt.Errorf("reconcile: %w", err)
		}
		a.roles = append(a.roles, role{roleReconcile, r.Run})
	}
	return a, nil
}

// run serves every role until ctx is cancelled or one fails, then shuts down in one fixed order, the
// order the roles were added in: the HTTP listener first (readiness off, in-flight webhooks answered after
// their ack), then the verifier's consumers, the submit service and the reconciler, each finishing its
// in-flight work before the next is stopped; then the NATS connection drains, and last the embedded
// server stops.
func (a *app) run(ctx context.Context) error {
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
	a.log.Info().Strs("roles", a.cfg.Roles).Str("http", a.http.Addr().String()).Msg("bridge running")
	err := g.Wait()
	a.nats.close()
	if err != nil {
		a.log.Error().Err(err).Msg("bridge stopped")
		return err
	}
	a.log.Info().Msg("bridge stopped")
	return nil
}

// runBridge is bridge run.
func runBridge(ctx context.Context, cfg Config, log zerolog.Logger) error {
	a, err := newApp(ctx, cfg, log, appOptions{})
	if err != nil {
		return err
	}
	return a.run(ctx)
}

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
