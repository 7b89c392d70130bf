package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/evershield/bridge/batch"
	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/ingest"
	"github.com/evershield/bridge/internal/procname"
	"github.com/evershield/bridge/internal/serving"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/reconcile"
	"github.com/evershield/bridge/submit"
	"github.com/evershield/bridge/upstream"
	"github.com/evershield/bridge/verify"
)

// App is one bridge process: its NATS side, the HTTP listener and the configured roles.
type App struct {
	cfg     Config
	version string
	log     zerolog.Logger
	reg     *registry
	nats    *natsSide
	api     *upstream.Client
	budget  *budget.Shared
	// unknown is the account-wide unknown-job budget (BRIDGE_UNKNOWN_JOB_RPM) of the verify role.
	unknown *budget.Shared
	// jobs is the process's one JOBS watcher, for the roles that need the pending jobs; nil without them.
	jobs *jobs.Watcher
	http *ingest.Server
	// admin serves health and metrics when BRIDGE_ADMIN_ADDR is set; nil otherwise.
	admin   *ingest.Server
	handler *ingest.Handler
	// mounted counts the requests in the handlers the caller mounts (App.Handler, App.WebhookHandler).
	mounted mounted
	// roles run in one group; the first to fail stops all.
	roles []role
	// fidelity says when export rows are faithful (no custom categories); nil until a role needs it.
	fidelity *batch.Fidelity
	// tracer is the caller's TracerProvider ([WithTracerProvider]); nil makes no span.
	tracer trace.TracerProvider
}

type role struct {
	name string
	run  func(context.Context) error
	// serving is closed once the role serves; nil when it has nothing to wait for.
	serving <-chan struct{}
}

// options are the knobs that only in-process callers (demo, bench, tests) use.
type options struct {
	// publicFromListener sets BRIDGE_PUBLIC_URL to the bound HTTP address when it is empty.
	publicFromListener bool
	// reconcileInstance names the reconciler in its lease, and the process in the shared budget.
	reconcileInstance string
	// version is the build's version, for the start-up log, bridge_build_info and the micro service.
	version string
	// failpoint is the deliverer's test-only failpoint (see [WithDeliveryFailpoint]).
	failpoint func(jobs.Failpoint, string)
	// conn, registerer, noListener and tracer are what an embedding program brings (see embed.go).
	conn       *nats.Conn
	registerer prometheus.Registerer
	noListener bool
	tracer     trace.TracerProvider
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

// WithDeliveryFailpoint is for tests only (the crash suite, through the binary's BRIDGE_TEST_FAILPOINT):
// f is called, and may block, at each [jobs.Failpoint] of this process: a result's publish path and a
// compaction round.
func WithDeliveryFailpoint(f func(point jobs.Failpoint, id string)) Option {
	return func(o *options) error {
		o.failpoint = f
		return nil
	}
}

// WithVersion sets the build's version: it is logged at start, exported as bridge_build_info{version}
// and, as semver, is the version of the submit micro service. Default "(devel)".
func WithVersion(v string) Option {
	return func(o *options) error {
		o.version = v
		return nil
	}
}

// New starts NATS (embedded or external), provisions the streams and buckets, binds the HTTP listener
// and builds every configured role, from a validated cfg ([Config.Validate]). Nothing serves until
// [App.Run], which also releases everything when it returns. [WithConn], [WithRegisterer] and
// [WithoutListener] put the caller's connection, registry and HTTP server in place of the bridge's own.
func New(ctx context.Context, cfg Config, log zerolog.Logger, opts ...Option) (_ *App, err error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("bridge: %w", err)
		}
	}
	if o.version == "" {
		o.version = "(devel)"
	}
	if o.reconcileInstance == "" {
		o.reconcileInstance = procname.New()
	}
	a := &App{cfg: cfg, log: log, reg: newRegistry(o.registerer), version: o.version, tracer: o.tracer}
	defer func() {
		if err != nil {
			a.reg.release()
		}
	}()
	registerBuildInfo(a.reg, o.version)
	log.Info().Str("version", o.version).Str("go_version", runtime.Version()).Strs("roles", cfg.Roles).Msg("bridge starting")
	if a.nats, err = startNATS(ctx, cfg, log, o.conn); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.nats.close()
		}
	}()
	if cfg.Has(RoleIngest) || cfg.Has(RoleSubmit) || cfg.Has(RoleReconcile) {
		// The one JOBS watch: submit's ledger of owed verifications, ingest's in-memory test of whether a
		// webhook's job is one the bridge tracks, and the feed of the reconciler's index.
		a.jobs = jobs.NewWatcher(a.nats.res.Jobs, cfg.PollInterval, a.log)
		a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bridge_budget_owed_jobs",
			Help: "Pending jobs of the account, each owing the upstream one verification; admission plans for them before it accepts a submission.",
		}, func() float64 { return float64(a.jobs.Count()) }))
	}
	if err := a.listen(o); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && a.http != nil {
			_ = a.http.Close()
		}
	}()
	if a.cfg.needsUpstream() {
		if err := a.startUpstream(ctx, o.reconcileInstance); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				a.budget.Stop()
				if a.unknown != nil {
					a.unknown.Stop()
				}
			}
		}()
		if err := a.addRoles(o); err != nil {
			return nil, err
		}
	}
	if a.jobs != nil {
		a.roles = append(a.roles, role{"jobs-watch", a.jobs.Run, a.jobs.Ready()}) // after the roles that read it
	}
	if err := a.reg.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	// The admin listener is added last, so it stops last: /metrics and /readyz (503 by then) answer
	// while the roles drain.
	if err := a.listenAdmin(); err != nil {
		return nil, err
	}
	return a, nil
}

// listenAdmin binds the health and metrics listener of BRIDGE_ADMIN_ADDR, when it is set.
func (a *App) listenAdmin() error {
	if a.cfg.AdminAddr == "" {
		return nil
	}
	var err error
	// A CPU profile or trace runs in the handler: the write timeout leaves room for the longest.
	sc := ingest.ServerConfig{Addr: a.cfg.AdminAddr, Handler: adminOnly(a.handler, a.cfg.Pprof), Log: a.log,
		WriteTimeout: (maxProfileSeconds + 5) * time.Second}
	a.admin, err = ingest.Listen(sc)
	if err != nil {
		return fmt.Errorf("%sADMIN_ADDR: %w", EnvPrefix, err)
	}
	a.roles = append(a.roles, role{"admin", a.admin.Run, a.admin.Serving()})
	return nil
}

// guards builds ingest's two early refusals that protect JetStream storage, and adds their watchers to
// the roles (an ingest process only):
//   - under v2 the upstream retries webhooks, so ingest refuses early (503) when WEBHOOKS is near its
//     limit instead of buffering; under v1 a refused webhook is only recovered by polling, so never;
//   - without a token or secret, webhooks of jobs the bridge does not track are refused while the slow
//     lane's backlog of them is at BRIDGE_UNKNOWN_BACKLOG, so a flood of forged ids cannot fill storage.
func (a *App) guards() (overloaded, unprovenFull func() bool, err error) {
	cfg := a.cfg
	webhooks, err := ingest.NewPressure(ingest.PressureConfig{Log: a.log,
		Info: func(ctx context.Context) (*jetstream.StreamInfo, error) {
			st, err := a.nats.js.Stream(ctx, cfg.Names().StreamWebhooks)
			if err != nil {
				return nil, err
			}
			return st.Info(ctx)
		}})
	if err != nil {
		return nil, nil, err
	}
	// SLOWLANE is a work queue: its messages are the webhooks still waiting in the lane.
	unknown, err := ingest.NewPressure(ingest.PressureConfig{Log: a.log, HighWater: 1, What: "backlog of webhooks of unknown jobs",
		Level: func(ctx context.Context) (float64, float64, error) {
			info, err := a.nats.res.SlowLane.Info(ctx)
			if err != nil {
				return 0, 0, err
			}
			return float64(info.State.Msgs), float64(cfg.UnknownBacklogLimit()), nil
		}})
	if err != nil {
		return nil, nil, err
	}
	if cfg.Has(RoleIngest) {
		if cfg.APIContract != contract.ContractV1 {
			a.roles = append(a.roles, role{"webhook-pressure", webhooks.Run, nil})
		}
		if cfg.WebhookToken == "" && cfg.WebhookSecret == "" && cfg.UnknownBacklogLimit() > 0 {
			a.roles = append(a.roles, role{"unknown-backlog", unknown.Run, nil})
		}
	}
	return func() bool { return a.contractV2() && webhooks.High() }, unknown.High, nil
}

// known reports whether a job is one the bridge tracks (a pending JOBS record).
func (a *App) known(id string) bool { return a.jobs != nil && a.jobs.Has(id) }

// listen builds the ingest handler (health and metrics too) and binds the HTTP listener.
func (a *App) listen(o options) error {
	cfg := a.cfg
	overloaded, unprovenFull, err := a.guards()
	if err != nil {
		return err
	}
	a.handler, err = ingest.New(ingest.Config{Names: cfg.Names(),
		Publisher: a.nats.js, Log: a.log, Metrics: a.reg, Gatherer: a.reg.gatherer, MaxBody: int64(cfg.MaxBody),
		Token: cfg.WebhookToken, Secret: cfg.WebhookSecret, Ready: a.nats.ready, Serving: a.serving,
		PreviousToken: cfg.WebhookTokenPrevious, PreviousSecret: cfg.WebhookSecretPrevious,
		Overloaded: overloaded, UnprovenFull: unprovenFull, Known: a.known,
	})
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	registerReadiness(a.reg, a.handler)
	if cfg.Has(RoleVerify) {
		a.reg.MustRegister(newLagCollector(a.nats.js, cfg.Names(), a.log))
	}
	if o.noListener {
		if o.publicFromListener {
			return errors.New("WithPublicURLFromListener: no listener (WithoutListener)")
		}
		a.roles = append(a.roles, a.handlerRole())
		return nil
	}
	h := a.traced(a.routes(), true)
	if cfg.AdminAddr != "" {
		h = webhooksOnly(h)
	}
	a.http, err = ingest.Listen(ingest.ServerConfig{
		Addr: cfg.HTTPAddr, Handler: h, Log: a.log, MaxBody: int64(cfg.MaxBody),
		TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile, OnShutdown: a.handler.SetShuttingDown,
		ShutdownDelay: cfg.ShutdownDelay,
	})
	if errors.Is(err, ingest.ErrTLSKeyPair) {
		return fmt.Errorf("%sTLS_CERT_FILE, %sTLS_KEY_FILE: %w", EnvPrefix, EnvPrefix, err)
	}
	if err != nil {
		return fmt.Errorf("%sHTTP_ADDR: %w", EnvPrefix, err)
	}
	a.roles = append(a.roles, role{"http", a.http.Run, a.http.Serving()})
	if o.publicFromListener && cfg.PublicURL == "" {
		scheme := "http"
		if cfg.TLSCertFile != "" {
			scheme = "https"
		}
		a.cfg.PublicURL = scheme + "://" + a.http.Addr().String()
	}
	return nil
}

// startUpstream starts the share of the account-wide budget, which every upstream call of every process
// on this NATS draws on, and the upstream client.
func (a *App) startUpstream(ctx context.Context, instance string) error {
	cfg := a.cfg
	var err error
	a.budget, err = budget.New(budget.Config{Account: cfg.Account(),
		KV: a.nats.res.Budget, RPM: int(cfg.APIRPM), Auto: cfg.APIRPM == RPMAuto, Burst: cfg.APIBurst,
		Instance: instance, Log: a.log, Metrics: a.reg,
	})
	if err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	if err := a.budget.Start(ctx); err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	a.api, err = upstream.New(upstream.Config{
		BaseURL: cfg.APIURL, APIKey: cfg.APIKey, Contract: cfg.APIContract, Limiter: a.budget, Log: a.log, Metrics: a.reg,
		TracerProvider: a.tracer,
	})
	if err != nil {
		a.budget.Stop()
		return fmt.Errorf("upstream: %w", err)
	}
	return nil
}

// addRoles builds the configured roles that call the upstream, in their stop order.
func (a *App) addRoles(o options) error {
	cfg := a.cfg
	store := jobs.NewStore(a.nats.res.Jobs)
	deadlines := cfg.deadlines()
	hist, err := history.New(history.Config{KV: a.nats.res.History})
	if err != nil {
		return err
	}
	deliverer, err := jobs.NewDeliverer(jobs.DelivererConfig{Names: cfg.Names(), JS: a.nats.js, Store: store, Deadlines: deadlines, Log: a.log,
		Failpoint: o.failpoint, History: hist})
	if err != nil {
		return err
	}
	if cfg.Has(RoleVerify) {
		vcfg := verify.Config{Names: cfg.Names(), JS: a.nats.js, API: a.api, Deliverer: deliverer, Log: a.log, Metrics: a.reg,
			UnknownRPM: cfg.UnknownRPM(), Export: a.api, Budget: a.budget, Fidelity: a.batchFidelity(), TracerProvider: a.tracer}
		if err := a.startUnknownBudget(&vcfg, o.reconcileInstance); err != nil {
			return err
		}
		v, err := verify.New(vcfg)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		a.roles = append(a.roles, role{RoleVerify, v.Run, v.Serving()})
		if cfg.Namespace == "" { // only a bridge without a namespace had the earlier slow lane
			a.roles = append(a.roles, role{"slowlane-upgrade", func(ctx context.Context) error {
				return natsx.MoveOldSlowLane(ctx, a.nats.js, a.log)
			}, nil})
		}
	}
	if cfg.Has(RoleSubmit) {
		if err := a.addSubmit(store, hist, deadlines, o.version); err != nil {
			return err
		}
	}
	if cfg.Has(RoleReconcile) {
		return a.addReconcile(deliverer, hist, o)
	}
	return nil
}

// batchFidelity is the process's one check of whether export rows are faithful (package batch), run as a
// role of its own from the first role that needs it.
func (a *App) batchFidelity() *batch.Fidelity {
	if a.fidelity == nil {
		a.fidelity = &batch.Fidelity{Log: a.log.With().Str("component", "batch").Logger(),
			Check: func(ctx context.Context) (bool, error) {
				mc, err := a.api.ModerationConfig(ctx)
				return len(mc.Custom()) > 0, err
			}}
		a.roles = append(a.roles, role{"batch-fidelity", func(ctx context.Context) error {
			a.fidelity.Run(ctx)
			return nil
		}, nil})
	}
	return a.fidelity
}

// verifyCost is what admission counts for the verification of owed jobs: in batches while the export is
// faithful (batch.Cost), else a GET /job each.
func (a *App) verifyCost() func(int) float64 {
	f := a.batchFidelity()
	return func(owed int) float64 {
		if f.Faithful() {
			return batch.Cost(owed, verify.DefaultBatchMin)
		}
		return float64(owed)
	}
}

// addReconcile adds the reconcile role, which also compacts delivered jobs into hist while it leads, once
// JOBS is at the layout that compacts (contract.LayoutHistory).
func (a *App) addReconcile(deliverer *jobs.Deliverer, hist *history.Store, o options) error {
	cfg := a.cfg
	compactor, err := jobs.NewCompactor(jobs.CompactorConfig{Names: cfg.Names(), Watcher: a.jobs, Jobs: a.nats.res.JobsStream,
		Results: a.nats.res.Results, Idempotency: a.nats.res.IdempotencyStream, Archive: hist, Window: cfg.DuplicateWindow, LateWatch: reconcile.DefaultLateWatch,
		Log: a.log, Metrics: a.reg, Failpoint: o.failpoint})
	if err != nil {
		return err
	}
	r, err := reconcile.New(reconcile.Config{
		Watcher: a.jobs, Leases: a.nats.res.Leases, Deliverer: deliverer, API: a.api, Budget: a.budget,
		PollInterval: cfg.PollInterval, WebhookGrace: cfg.WebhookGrace, Adopt: cfg.Adopt, Log: a.log, Metrics: a.reg,
		Instance: o.reconcileInstance, Compactor: compactor,
		PollOnly: cfg.PublicURL == "", Export: a.api, Fidelity: a.batchFidelity(), RPM: func() int { return a.budget.Params().RPM },
	})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	a.roles = append(a.roles, role{RoleReconcile, r.Run, nil})
	a.reg.MustRegister(newStateCollector(a.nats.res.JobsStream, hist, a.log))
	return nil
}

// startUnknownBudget gives the verifier the unknown-job budget that every verifier process of the account
// shares (BRIDGE_BUDGET key unknown), so N processes spend BRIDGE_UNKNOWN_JOB_RPM between them.
func (a *App) startUnknownBudget(vcfg *verify.Config, instance string) error {
	if vcfg.UnknownRPM < 1 {
		return nil
	}
	b, err := budget.New(budget.Config{KV: a.nats.res.Budget, Account: a.cfg.Account(), Key: budget.KeyUnknown, RPM: vcfg.UnknownRPM,
		Instance: instance, Log: a.log, Metrics: a.reg})
	if err != nil {
		return fmt.Errorf("unknown-job budget: %w", err)
	}
	if err := b.Start(context.Background()); err != nil {
		return fmt.Errorf("unknown-job budget: %w", err)
	}
	a.unknown, vcfg.UnknownLimiter = b, b
	return nil
}

// addSubmit builds the submit service and the ledger of owed verifications it admits by.
func (a *App) addSubmit(store *jobs.Store, hist *history.Store, deadlines jobs.Deadlines, version string) error {
	s, err := submit.New(submit.Config{Names: a.cfg.Names(),
		NC: a.nats.nc, JS: a.nats.js, Idempotency: a.nats.res.Idempotency, IdempotencyStream: a.nats.res.IdempotencyStream, API: a.api, Store: store, History: hist,
		Deadlines: deadlines, Log: a.log, Metrics: a.reg, PublicURL: a.cfg.PublicURL, Token: a.cfg.WebhookToken,
		Ledger: a.jobs, Budget: a.budget, PollInterval: a.cfg.PollInterval, Version: serviceVersion(version),
		VerifyCost: a.verifyCost(), TracerProvider: a.tracer,
		Modalities: submit.ModalitiesFor(a.cfg.APIContract),
	})
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	a.roles = append(a.roles, role{RoleSubmit, s.Run, s.Serving()})
	return nil
}

// Run serves every role until ctx is cancelled or one fails, then shuts down in one fixed order, the
// order the roles were added in: the HTTP listener first (readiness off, in-flight webhooks answered after
// their ack), then the verifier's consumers, the submit service, the reconciler and the JOBS watcher,
// each finishing its in-flight work before the next is stopped; then the NATS connection drains (a caller's,
// [WithConn], is only flushed), and last the embedded server stops.
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
	a.log.Info().Str("version", a.version).Strs("roles", a.cfg.Roles).Stringer("http", a.Addr()).Msg("bridge running")
	err := g.Wait()
	for _, b := range []*budget.Shared{a.unknown, a.budget} {
		if b != nil {
			b.Stop() // after the roles: their last calls still draw on it
		}
	}
	a.nats.close()
	a.reg.release()
	if err != nil {
		a.log.Error().Err(err).Msg("bridge stopped")
		return err
	}
	a.log.Info().Msg("bridge stopped")
	return nil
}

// serving reports whether every role of the process serves: its listeners accept, its consumers exist,
// its service's subscriptions are known to the server and the JOBS watch has replayed.
func (a *App) serving() bool {
	chans := make([]<-chan struct{}, 0, len(a.roles))
	for _, r := range a.roles {
		chans = append(chans, r.serving)
	}
	return serving.All(chans...)
}

// contractV2 reports whether the upstream speaks v2: configured so, or decided by this process's client
// under auto.
func (a *App) contractV2() bool {
	return a.cfg.APIContract == contract.ContractV2 || a.api != nil && a.api.Contract() == upstream.ContractV2
}

// Addr is the bound address of the webhook listener (health and metrics too without BRIDGE_ADMIN_ADDR);
// nil under [WithoutListener].
func (a *App) Addr() net.Addr {
	if a.http == nil {
		return nil
	}
	return a.http.Addr()
}

// AdminAddr is the bound address of the health and metrics listener of BRIDGE_ADMIN_ADDR; nil without one.
func (a *App) AdminAddr() net.Addr {
	if a.admin == nil {
		return nil
	}
	return a.admin.Addr()
}

// PublicURL is the base URL the upstream reaches this bridge at (BRIDGE_PUBLIC_URL, or the listener's
// with [WithPublicURLFromListener]); "" when there is none.
func (a *App) PublicURL() string { return a.cfg.PublicURL }

// Server is the embedded nats-server, or nil when the bridge uses an external NATS.
func (a *App) Server() *server.Server { return a.nats.srv }

// EmbeddedUser authenticates as the bridge's own user of its embedded server, which may do everything in
// its account: for tools in the same process that add to the server what no client role may (bridge
// bench's floor stream). Nil when the bridge uses an external NATS.
func (a *App) EmbeddedUser() nats.Option {
	if a.nats.identity == nil {
		return nil
	}
	return a.nats.identity.Option()
}

// Metrics gathers the process's metrics, as GET /metrics serves them: the bridge's own registry, or under
// [WithRegisterer] the caller's registerer when it is also a Gatherer, else nil.
func (a *App) Metrics() prometheus.Gatherer { return a.reg.gatherer }

// isWebhookPath reports whether p is a path of the webhook endpoint.
func isWebhookPath(p string) bool {
	return p == ingest.PathWebhook || strings.HasPrefix(p, ingest.PathWebhook+"/")
}

// withoutWebhooks serves health and metrics but not webhooks, for processes without the ingest role.
func withoutWebhooks(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWebhookPath(r.URL.Path) {
			notIngest(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// webhooksOnly serves webhooks only: with BRIDGE_ADMIN_ADDR, health and metrics stay off the public port.
func webhooksOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebhookPath(r.URL.Path) {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// maxProfileSeconds bounds a CPU profile or trace (?seconds=N), which runs in the admin listener's handler.
const maxProfileSeconds = 300

// adminOnly serves health and metrics only, for the BRIDGE_ADMIN_ADDR listener, and with withPprof the
// net/http/pprof profiles under /debug/pprof/.
func adminOnly(h http.Handler, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	for _, p := range []string{ingest.PathHealthz, ingest.PathReadyz, ingest.PathMetrics} {
		mux.Handle(p, h)
	}
	if withPprof {
		mux.Handle("/debug/pprof/", boundProfileSeconds(http.HandlerFunc(pprof.Index)))
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.Handle("/debug/pprof/profile", boundProfileSeconds(http.HandlerFunc(pprof.Profile)))
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.Handle("/debug/pprof/trace", boundProfileSeconds(http.HandlerFunc(pprof.Trace)))
	}
	return mux
}

// boundProfileSeconds refuses a profile or trace longer than maxProfileSeconds.
func boundProfileSeconds(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sec, err := strconv.ParseUint(r.URL.Query().Get("seconds"), 10, 64); err == nil && sec > maxProfileSeconds {
			http.Error(w, fmt.Sprintf("seconds: %d is over %d", sec, maxProfileSeconds), http.StatusBadRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}
