package verify

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/evershield/bridge/batch"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/internal/serving"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// API is the part of the upstream client (*upstream.Client) the verifier calls: FetchJob at
// [upstream.ClassVerify], and ListJobs to find jobs without a record in the account's list; see the
// client's methods. Batches call [batch.Source] (Config.Export).
type API interface {
	FetchJob(ctx context.Context, id string, class upstream.Class) (upstream.Fetched, error)
	ListJobs(ctx context.Context, f upstream.ListFilter) (upstream.JobList, error)
}

// Budget is what the scarcity rule asks of the upstream budget (budget.Shared): what it can grant over
// a duration, how many calls of this process wait for it, and whether it refused a submission lately.
type Budget interface {
	Capacity(d time.Duration) float64
	Queued() int
	RefusedWithin(d time.Duration) bool
}

// Config configures a [Verifier]. JS, API and Deliverer are required; every other field has a
// default.
type Config struct {
	// JS is the JetStream context of the consumer, the dead-letter publishes and the acknowledgements.
	JS jetstream.JetStream
	// API is the budgeted upstream client.
	API API
	// Deliverer is the one publish path for results; its Store is the JOBS store the verifier records
	// attempts in.
	Deliverer *jobs.Deliverer
	// Log receives the verifier's events, tagged component=verify.
	Log zerolog.Logger
	// Metrics registers the bridge_verify_* and bridge_deadletter_total collectors; nil registers nothing.
	Metrics prometheus.Registerer
	// Now is the clock for recorded times and latencies; default time.Now.
	Now func() time.Time
	// Names are the bridge's names (its namespace's): its streams, subjects and consumers. The zero Names
	// means contract.Default.
	Names contract.Names

	// Consumer is the durable name of the pull consumer on WEBHOOKS; default Names.ConsumerVerify.
	Consumer string
	// Concurrency bounds the webhooks verified at once by this process. 0 (the default) adapts it to
	// the upstream: it starts at 64 and moves between 64 and min(1024, MaxAckPending/2), growing while
	// the upstream's latency stays flat and throughput rises, shrinking when the latency rises (its
	// budget queues the calls); see [limiter]. A positive value fixes it.
	Concurrency int
	// MaxAckPending of the consumer. Messages waiting out a NakWithDelay count towards it, so it must be
	// well above Concurrency; default max(1000, 32*Concurrency), 2048 when Concurrency adapts.
	MaxAckPending int
	// AckWait of the consumer; a handler still working signals progress every AckWait/3. Default 30s.
	AckWait time.Duration
	// MaxAttempts is how many deliveries of one webhook may fail (upstream error) or find the job
	// unfinished before the webhook is dead-lettered with reason attempts_exhausted; default 20.
	MaxAttempts int
	// RetryBase and RetryMax shape the redelivery delay: full jitter over RetryBase*2^(attempt-1),
	// capped at RetryMax, and never below RetryBase/4 or the upstream's Retry-After. Defaults 1s and 10s:
	// GET /job is an idempotent read, and the shared budget, not the backoff, sets the pace of retries,
	// so a job that meets several upstream errors in a row still gets its result within a minute.
	RetryBase time.Duration
	RetryMax  time.Duration
	// AuthPause is how long verification pauses, for every webhook, after the upstream refused the key
	// (401, 402, 403); such webhooks are kept, never dead-lettered. Default 30s.
	AuthPause time.Duration
	// HandlerTimeout bounds the handling of one delivery, including the wait for upstream budget; a
	// handler that runs out is retried later. Default 5m.
	HandlerTimeout time.Duration
	// ShutdownTimeout is how long Run waits, after its ctx is cancelled, for in-flight handlers before
	// cancelling them and giving their webhooks back (nak). Default 10s.
	ShutdownTimeout time.Duration

	// UnknownRPM is the rate, in upstream calls per minute, of UnknownLimiter, the budget for verifying
	// webhooks whose job has no JOBS record (jobs submitted elsewhere, or forged ids); see [Verifier].
	// 0 means DefaultUnknownRPM; [UnknownOff] never verifies them (dead letter unknown_job, no upstream
	// call, no slow lane).
	UnknownRPM int
	// UnknownLimiter is the unknown-job budget: a budget.Shared of UnknownRPM under its own key, which
	// every verifier process of the account shares, so N processes spend UnknownRPM between them.
	// Required unless UnknownRPM is UnknownOff.
	UnknownLimiter UnknownBudget
	// ListLookback is how long before a webhook its job may have been created, for finding it in the
	// account's job list (the window a list round pages): the longest job deadline and a margin. Default
	// 20m.
	ListLookback time.Duration
	// UnknownConsumer is the durable name of the slow lane's pull consumer on SLOWLANE (filtered to
	// slowlane.unknown_job); default Names.ConsumerVerifyUnknown.
	UnknownConsumer string
	// UnknownConcurrency bounds the slow-lane webhooks this process handles at once; they mostly wait for a
	// list round, which serves them all together, so it is generous; default 128.
	UnknownConcurrency int
	// UnknownMaxAckPending is the slow lane consumer's MaxAckPending. Parked webhooks (ids without
	// provenance waiting for the unknown-job budget) and those waiting out a NakWithDelay count towards
	// it; default 64*UnknownConcurrency, at least 2*UnknownConcurrency. Ingest's BRIDGE_UNKNOWN_BACKLOG
	// keeps the backlog below it.
	UnknownMaxAckPending int

	// Export, when set, settles jobs in batches from GET /jobs/export (package batch): jobs with a record
	// while calls are scarce (batch.Scarce on Budget), and the slow lane's jobs always, in rounds of the
	// unknown-job budget. Batches run only while Fidelity says the export is faithful. nil verifies every
	// job with GET /job and finds unknown jobs in the account's list.
	Export batch.Source
	// Budget is the upstream budget the API waits for, whose scarcity decides batches; required with
	// Export.
	Budget Budget
	// Fidelity says when batches are faithful (no custom categories); required with Export.
	Fidelity *batch.Fidelity
	// BatchMin and BatchMaxWait shape a round (batch.Config.Min, MaxWait); defaults DefaultBatchMin and 20s.
	BatchMin     int
	BatchMaxWait time.Duration

	// TracerProvider makes the verification spans: one per delivery that reads a job's record, a child
	// of the webhook's trace context (its traceparent header), else of the record's, around the upstream
	// call or the batch look-up and the delivery, whose result carries it. nil makes none, and the
	// webhook's or the record's trace context still reaches the result.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
	c.Names = c.Names.OrDefault()
	if c.Consumer == "" {
		c.Consumer = c.Names.ConsumerVerify
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 32 * adaptiveInitial // room for the adaptive limit's ceiling, twice over
		if c.Concurrency > 0 {
			c.MaxAckPending = max(1000, 32*c.Concurrency)
		}
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 20
	}
	if c.RetryBase == 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = 10 * time.Second
	}
	if c.AuthPause == 0 {
		c.AuthPause = 30 * time.Second
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = 5 * time.Minute
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.UnknownRPM == 0 {
		c.UnknownRPM = DefaultUnknownRPM
	}
	if c.ListLookback == 0 {
		c.ListLookback = 20 * time.Minute
	}
	if c.UnknownConsumer == "" {
		c.UnknownConsumer = c.Names.ConsumerVerifyUnknown
	}
	if c.UnknownConcurrency == 0 {
		c.UnknownConcurrency = 128
	}
	if c.UnknownMaxAckPending == 0 {
		c.UnknownMaxAckPending = 64 * c.UnknownConcurrency
	}
}

// Validate reports the first invalid field, after defaults are applied.
func (c *Config) Validate() error {
	switch {
	case c.JS == nil:
		return fmt.Errorf("%w: JS: required", ErrInvalidConfig)
	case c.API == nil:
		return fmt.Errorf("%w: API: required", ErrInvalidConfig)
	case c.Deliverer == nil:
		return fmt.Errorf("%w: Deliverer: required", ErrInvalidConfig)
	case c.Concurrency < 0:
		return fmt.Errorf("%w: Concurrency %d: must be positive, or 0 to adapt", ErrInvalidConfig, c.Concurrency)
	case c.MaxAckPending < 2*max(c.Concurrency, adaptiveMin):
		return fmt.Errorf("%w: MaxAckPending %d: must be at least twice Concurrency (%d)", ErrInvalidConfig,
			c.MaxAckPending, max(c.Concurrency, adaptiveMin))
	case c.AckWait < time.Second:
		return fmt.Errorf("%w: AckWait %v: must be at least 1s", ErrInvalidConfig, c.AckWait)
	case c.MaxAttempts < 1:
		return fmt.Errorf("%w: MaxAttempts %d: must be at least 1", ErrInvalidConfig, c.MaxAttempts)
	case c.RetryBase <= 0 || c.RetryMax < c.RetryBase:
		return fmt.Errorf("%w: RetryBase %v, RetryMax %v: need 0 < RetryBase <= RetryMax", ErrInvalidConfig,
			c.RetryBase, c.RetryMax)
	case c.HandlerTimeout < time.Second:
		return fmt.Errorf("%w: HandlerTimeout %v: must be at least 1s", ErrInvalidConfig, c.HandlerTimeout)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("%w: ShutdownTimeout %v: must not be negative", ErrInvalidConfig, c.ShutdownTimeout)
	case c.UnknownRPM < 1 && c.UnknownRPM != UnknownOff:
		return fmt.Errorf("%w: UnknownRPM %d: must be positive or UnknownOff", ErrInvalidConfig, c.UnknownRPM)
	case c.UnknownConcurrency < 1:
		return fmt.Errorf("%w: UnknownConcurrency %d: must be at least 1", ErrInvalidConfig, c.UnknownConcurrency)
	case c.UnknownMaxAckPending < 2*c.UnknownConcurrency:
		return fmt.Errorf("%w: UnknownMaxAckPending %d: must be at least twice UnknownConcurrency (%d)",
			ErrInvalidConfig, c.UnknownMaxAckPending, c.UnknownConcurrency)
	case c.UnknownLimiter == nil && c.UnknownRPM != UnknownOff:
		return fmt.Errorf("%w: UnknownLimiter: required unless UnknownRPM is UnknownOff", ErrInvalidConfig)
	case c.Export != nil && (c.Budget == nil || c.Fidelity == nil):
		return fmt.Errorf("%w: Budget and Fidelity: required with Export", ErrInvalidConfig)
	}
	return nil
}

// Verifier is the verify role. It takes every raw webhook from the durable pull consumer
// verify on WEBHOOKS (and, for unknown jobs the budget could not take at once, from its slow lane
// verify-unknown on SLOWLANE, below: the consumers of Config.Names), asks the upstream for the truth
// (GET /job/{id}) and publishes that through [jobs.Deliverer.Deliver]. Several verifiers, in one process
// or many, share both consumers.
//
// For each raw webhook, in order:
//
//   - no usable job_id in the body: dead letter (malformed), ack. No upstream call.
//   - the job's JOBS record says its result is out (delivered, or timed out with the late result out):
//     ack. No upstream call, so duplicate floods cost nothing but a KV read.
//   - no JOBS record, and the job's id in the history of delivered jobs ([jobs.Deliverer.InHistory], read
//     after the record): a job delivered and compacted, ack as already delivered. No upstream call.
//   - no JOBS record otherwise: the unknown-job budget decides first (below); a webhook it cannot take
//     now moves to the slow lane without an upstream call.
//   - GET /job/{id} at [upstream.ClassVerify]; the attempt is recorded in the job's JOBS record, which is
//     created through [jobs.Deliverer.Ensure] for a job the upstream confirms but the bridge did not
//     submit (never for a 404).
//   - terminal: Deliver, then DoubleAck. The ack comes only after the result is published and recorded;
//     if anything fails before, the webhook is redelivered and the record makes the retry idempotent.
//   - 404: dead letter (not_found), ack. Exactly one GET per such webhook: a 404 is remembered in
//     memory so a redelivery (dead-letter publish or ack failed) goes straight to the dead letter.
//   - 400/401/402/403: dead letter (upstream_<status>), ack, logged at error level.
//   - not terminal yet, or a retryable failure (429, 5xx, timeout, connection, JOBS or RESULTS trouble):
//     NakWithDelay with exponential backoff and full jitter, honouring the upstream's Retry-After.
//
// Why the attempts are bounded, and how that keeps an outage from stalling or spinning the consumer:
// JetStream's consumer BackOff does not apply to explicit naks, so the delay is always ours
// (NakWithDelay), and a delayed nak keeps its message in the consumer's ack-pending set until the delay
// has passed (nats-server issue 6093). With unlimited redeliveries a long upstream outage would fill
// MaxAckPending with messages waiting out their delays, and new webhooks, including ones that could be
// verified at once, would stop flowing. So: MaxAckPending defaults to far above Concurrency (it only
// bounds the waiting set, not work), the delays grow to RetryMax, and after MaxAttempts deliveries
// (NumDelivered, counted by the server, so it survives restarts and is shared by all verifiers) the
// webhook leaves the consumer: it is dead-lettered with reason attempts_exhausted and acked. Nothing is
// dropped: a job with a JOBS record (every job submitted through the bridge, and every job the upstream
// confirmed once) stays pending, and the reconciler finishes it by polling, or times it out. Only a
// webhook for a job the bridge never saw confirmed is left solely in DEADLETTER, with the raw body, for
// an operator to replay; creating pending records from unverified webhooks would let a forger fill JOBS.
// The consumer's MaxDeliver is unlimited (-1) because the verifier counts attempts itself and must see
// the last delivery to dead-letter it; with MaxDeliver the server would drop it silently.
//
// Unknown job ids: jobs submitted elsewhere are first-class, forged ids cost a bounded amount. A webhook
// whose job has no JOBS record cannot be refused outright (jobs submitted elsewhere are legitimate, and
// the upstream's 404 is the only proof of forgery), but anyone can post one, with a fresh random id each
// time so the duplicate window does not help. So provenance comes first:
//
//   - a webhook that carried the configured token or a valid signature (ingest marks it with
//     Bridge-Authenticated) is verified at the full budget, like a known job;
//   - a webhook whose id is in the account's job list (GET /jobs, the recent window of finished jobs,
//     checked in rounds that settle every waiting id on each page: see listCheck) is verified at the
//     full budget too;
//   - any other spends the unknown-job budget (UnknownLimiter: UnknownRPM calls per minute, default
//     [DefaultUnknownRPM]; the bridge application defaults it to a tenth of BRIDGE_API_RPM) before its
//     GET; the list's pages spend it too. The budget is the account's, shared by every verifier process
//     through BRIDGE_BUDGET, so over any window W they make at most its burst + UnknownRPM×W/1min
//     upstream calls for ids without provenance between them, whatever the flood.
//
// A job whose provenance is established gets a JOBS record when the upstream confirms it, so the
// reconciler tracks it from then on. Such a webhook is never dropped, and never parked in the main
// consumer: delayed naks would hold places in its MaxAckPending (nats-server issue 6093) and a flood of
// forged ids would stall the webhooks of known jobs behind them. Instead there are two lanes:
//
//   - main lane (consumer Consumer on WEBHOOKS): an authenticated webhook goes on at once; another takes
//     an unknown-job token if one is free now, so a job submitted elsewhere is verified as promptly as a
//     known one while there is no flood. When none is free, the webhook moves to the slow lane: it is
//     published, raw and with its ingest headers, Bridge-Original-Subject and Bridge-Attempts, to
//     SLOWLANE on slowlane.unknown_job (the id names the message, so a redelivery collapses), and only
//     then acked on WEBHOOKS.
//   - slow lane (consumer UnknownConsumer on SLOWLANE, filtered to slowlane.unknown_job, at most
//     UnknownConcurrency at once per process and UnknownMaxAckPending in the consumer, fetched one at a
//     time): a job that got a record meanwhile is a known job. Otherwise the webhook joins the next list
//     round; found, it is verified at the full budget. Not found (forged, or older than the window), it
//     takes an unknown-job token if one is free, else it is parked: a delayed nak, spread over the time
//     the budget needs for the parked backlog, that frees the worker for the next webhook and spends no
//     attempt. Then as above: terminal: Deliver (source webhook), ack; 404: dead letter not_found; not
//     terminal or retryable: NakWithDelay, up to MaxAttempts (then attempts_exhausted).
//
// SLOWLANE is a work queue: a webhook leaves it when the lane acks it, so the stream holds exactly the
// webhooks still waiting, and none of them is a dead letter. Each ends as a result, a not_found or
// attempts_exhausted dead letter, or an ack of a job whose result was out. The lane's backlog is bounded
// only by SLOWLANE's limits: with a size cap a full stream refuses the move and the webhook is naked on
// WEBHOOKS for later; without one, a backlog older than BRIDGE_RETENTION (at the default budget, a flood
// of some 60,000 unknown ids per process and week) would age out unverified.
//
// UnknownRPM = [UnknownOff] never verifies unknown ids: each is dead-lettered as unknown_job without an
// upstream call and the slow lane is not run, so they stay in DEADLETTER for an operator to redrive.
// Every dead letter keeps the raw webhook for an operator to replay.
//
// Within one process, webhooks of the same job are verified one at a time, so a burst of duplicates
// costs one GET; across processes the JOBS record and Nats-Msg-Id keep the result single.
type Verifier struct {
	cfg      Config
	log      zerolog.Logger
	metrics  *verifyMetrics
	store    *jobs.Store
	jobLocks keyedMutex
	notFound *recentSet
	// lists finds jobs without a record in the account's job list; nil when UnknownRPM is UnknownOff.
	lists *listCheck
	// parked is about how many slow-lane webhooks wait, parked, for the unknown-job budget.
	parked atomic.Int64
	// authPause pauses all verification after the upstream refused the key.
	authPause pause
	// unknownBudget is the budget of UnknownRPM; nil when it is UnknownOff.
	unknownBudget *unknownTokens
	// serving is set once every lane's consumer exists.
	serving serving.Signal
	// batches and unknownBatches settle jobs from the export (Config.Export): those with a record when
	// calls are scarce, and the slow lane's in rounds of the unknown-job budget; nil without Export.
	batches, unknownBatches *batch.Batcher
	// owed counts the verifications this process is about to make or waiting for, for batch.Scarce.
	owed atomic.Int64
	// tracer makes the verification spans (Config.TracerProvider); untraced says it is a no-op's.
	tracer   trace.Tracer
	untraced bool
}

// Serving is closed once the consumers of every lane exist, so that webhooks stored from then on are
// delivered to this verifier.
func (v *Verifier) Serving() <-chan struct{} { return v.serving.Done() }

// lane is one of the verifier's two consumers; see [Verifier].
type lane struct {
	name   string // main or unknown, for logs
	stream string
	config jetstream.ConsumerConfig
	// limit bounds the lane's handlers in flight; prefetch is how many messages it pulls ahead.
	limit    *limiter
	prefetch int
	// slow marks the slow lane: an unknown job waits there for an unknown-job token, and its messages are
	// fetched one at a time when a worker is free.
	slow bool
	// stopping is closed when the lane stops taking work: at shutdown, or when the other lane cannot run.
	// Run sets it.
	stopping <-chan struct{}
	// created is called each time the lane's consumer has been created; Run sets it.
	created func()
}

// untilStopping is ctx, also cancelled when the lane stops taking work: for waits that hold no work
// in progress (a batch round), which the shutdown should not wait for.
func (l *lane) untilStopping(ctx context.Context) (context.Context, context.CancelFunc) {
	lctx, cancel := context.WithCancel(ctx)
	if l.stopping != nil {
		go func() {
			select {
			case <-l.stopping:
				cancel()
			case <-lctx.Done():
			}
		}()
	}
	return lctx, cancel
}

// stopped reports whether the lane has stopped taking work.
func (l *lane) stopped() bool {
	select {
	case <-l.stopping:
		return true
	default:
		return false
	}
}

// handlers runs the deliveries of one Run, each on a goroutine of its own, and counts them in wg. They
// run on work, Run's context without its cancellation, which ends only at a hard stop, so an in-flight
// publish is not cut short by the shutdown signal itself: the one context the Run loop owns.
type handlers struct {
	work context.Context
	wg   sync.WaitGroup
}

// New checks cfg and registers the metrics. It does not touch NATS; Run does.
func New(cfg Config) (*Verifier, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newVerifyMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("verifier metrics: %w", err)
	}
	v := &Verifier{
		cfg:      cfg,
		log:      cfg.Log.With().Str("component", "verify").Logger(),
		metrics:  m,
		store:    cfg.Deliverer.Store(),
		notFound: newRecentSet(4096, 10*time.Minute),
		tracer:   cfg.TracerProvider.Tracer(tracerName),
	}
	_, v.untraced = cfg.TracerProvider.(noop.TracerProvider)
	if cfg.UnknownRPM != UnknownOff {
		v.unknownBudget = &unknownTokens{lim: cfg.UnknownLimiter, rate: float64(cfg.UnknownRPM) / 60}
		v.lists = newListCheck(cfg.API, v.unknownBudget, cfg.ListLookback, m.listPages)
	}
	if cfg.Export != nil {
		if err := v.newBatchers(); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// ConsumerConfig is the configuration the verifier creates or updates its durable consumer with.
func (v *Verifier) ConsumerConfig() jetstream.ConsumerConfig {
	return v.consumerConfig(v.cfg.Consumer, "bridge verifier: raw webhooks to verify against the upstream",
		v.cfg.MaxAckPending, v.cfg.Names.SubjectWebhooks+">")
}

// UnknownConsumerConfig is the configuration the verifier creates or updates the slow lane's durable
// consumer on SLOWLANE with.
func (v *Verifier) UnknownConsumerConfig() jetstream.ConsumerConfig {
	return v.consumerConfig(v.cfg.UnknownConsumer,
		"bridge verifier slow lane: webhooks of unknown jobs waiting for the unknown-job budget",
		v.cfg.UnknownMaxAckPending, v.cfg.Names.SubjectUnknownLane)
}

// consumerConfig is what both lanes' consumers share: explicit acks, no MaxDeliver (the verifier counts
// attempts itself, see [Verifier]) and AckWait.
func (v *Verifier) consumerConfig(durable, description string, maxAckPending int, filter string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   description,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       v.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
		FilterSubject: filter,
	}
}

// lanes are the lanes this verifier runs: the slow one only when unknown ids are verified at all.
func (v *Verifier) lanes() []*lane {
	main := &lane{name: "main", stream: v.cfg.Names.StreamWebhooks, config: v.ConsumerConfig()}
	if c := v.cfg.Concurrency; c > 0 {
		main.limit, main.prefetch = fixedLimiter(c), c
	} else {
		main.limit = newLimiter(adaptiveInitial, adaptiveMin, min(adaptiveMax, v.cfg.MaxAckPending/2), time.Now)
		main.prefetch = adaptiveInitial
	}
	ls := []*lane{main}
	if v.unknownBudget != nil {
		ls = append(ls, &lane{name: "unknown", stream: v.cfg.Names.StreamSlowLane, config: v.UnknownConsumerConfig(),
			limit: fixedLimiter(v.cfg.UnknownConcurrency), prefetch: 1, slow: true})
	}
	return ls
}

// Run consumes and verifies webhooks, from the main consumer and the slow lane, until ctx is cancelled,
// then shuts down in two phases: it stops fetching and gives back (nak) fetched webhooks no handler has
// started and slow-lane webhooks still waiting for a token, then waits up to ShutdownTimeout for
// in-flight handlers, after which it cancels them and they nak their webhooks. It returns nil on such a
// shutdown, and an error only when a consumer cannot be set up because its stream (WEBHOOKS or
// SLOWLANE) does not exist. Lost connections and a deleted consumer are retried.
func (v *Verifier) Run(ctx context.Context) error {
	// Handlers outlive ctx by up to ShutdownTimeout.
	work, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	h := &handlers{work: work}
	// stop ends both lanes: at shutdown, or when one of them cannot run.
	stop, stopLanes := context.WithCancel(ctx)
	defer stopLanes()

	lanes := v.lanes()
	errs := make(chan error, len(lanes))
	var uncreated atomic.Int32
	uncreated.Store(int32(len(lanes)))
	for _, l := range lanes {
		l.stopping = stop.Done()
		l.created = sync.OnceFunc(func() {
			if uncreated.Add(-1) == 0 {
				v.serving.Set()
			}
		})
		go func() {
			err := v.runLane(stop, l, h)
			if err != nil {
				stopLanes()
			}
			errs <- err
		}()
	}
	var runErr error
	for range lanes {
		if err := <-errs; err != nil && runErr == nil {
			runErr = err
		}
	}

	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	t := time.NewTimer(v.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		v.log.Warn().Dur("shutdown_timeout", v.cfg.ShutdownTimeout).Msg("verifier handlers still running; cancelling them")
		hardStop()
		<-done
	}
	v.log.Info().Msg("verifier stopped")
	return runErr
}

// runLane creates the lane's consumer and consumes it until ctx is cancelled (nil) or its stream does
// not exist (the error). It starts its handlers through h.
func (v *Verifier) runLane(ctx context.Context, l *lane, h *handlers) error {
	log := v.log.With().Str("lane", l.name).Str("consumer", l.config.Durable).Logger()
	for wait := time.Duration(0); ctx.Err() == nil; {
		if wait > 0 && retry.Sleep(ctx, wait) != nil {
			break
		}
		wait = min(max(2*wait, 100*time.Millisecond), 5*time.Second)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := v.cfg.JS.CreateOrUpdateConsumer(cctx, l.stream, l.config)
		cancel()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("verify consumer %s on %s: %w", l.config.Durable, l.stream, err)
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn().Err(err).Dur("retry_in", wait).Msg("create verify consumer")
			}
			continue
		}
		l.created()
		log.Info().Int("concurrency", l.limit.Limit()).Bool("adaptive", l.limit.min != l.limit.max).Msg("verifier consuming")
		consume := v.consume
		if l.slow {
			consume = v.consumeOneByOne
		}
		if err := consume(ctx, cons, l, h); err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Dur("retry_in", wait).Msg("verify consumer stopped; recreating")
			continue
		}
		wait = 0
	}
	return nil
}

// consume runs one message iterator until ctx is cancelled (then it returns nil after giving back what
// was fetched but not started) or the iterator fails.
func (v *Verifier) consume(ctx context.Context, cons jetstream.Consumer, l *lane, h *handlers) error {
	// Prefetch no more than one batch (the fixed Concurrency, or the adaptive limit's start): other
	// verifier processes get their share, and a fetched message never waits long for a worker.
	it, err := cons.Messages(jetstream.PullMaxMessages(l.prefetch))
	if err != nil {
		return fmt.Errorf("messages: %w", err)
	}
	defer it.Stop()
	v.metrics.limit.Set(float64(l.limit.Limit()))
	for {
		// Take a worker slot before fetching, so a fetched message is started at once.
		if l.limit.acquire(ctx) != nil {
			v.giveBack(it)
			return nil
		}
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			l.limit.release(callTime{})
			switch {
			case ctx.Err() != nil:
				v.giveBack(it)
				return nil
			case errors.Is(err, jetstream.ErrMsgIteratorClosed):
				return err
			case errors.Is(err, jetstream.ErrNoHeartbeat):
				// The server restarted or the connection is down; the iterator re-pulls by itself.
				v.log.Debug().Err(err).Msg("verify consumer heartbeat missed")
			default:
				v.log.Warn().Err(err).Msg("verify consumer")
			}
			continue
		}
		v.start(h, msg, l)
	}
}

// consumeOneByOne is consume for the slow lane: it pulls one message each time a worker is free, and
// none ahead, because a slow-lane handler may wait long for its token and a prefetched message would sit
// unstarted while its AckWait runs. It returns nil when ctx is cancelled, or an error when the consumer
// is gone.
func (v *Verifier) consumeOneByOne(ctx context.Context, cons jetstream.Consumer, l *lane, h *handlers) error {
	for pause := time.Duration(0); ; {
		if l.limit.acquire(ctx) != nil {
			return nil
		}
		// A long poll; FetchContext also ends it at once on shutdown.
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			l.limit.release(callTime{})
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
				// Nothing came. A pull on a deleted consumer gets no answer either, so check it is
				// still there (one request per idle poll) and have it recreated if not.
				ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, ierr := cons.Info(ictx)
				cancel()
				if errors.Is(ierr, jetstream.ErrConsumerNotFound) {
					return ierr
				}
				pause = 0
				continue
			case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrConsumerDeleted):
				return err
			}
			// Connection trouble or a server restart: pause a little rather than spin on the error.
			pause = min(max(2*pause, 100*time.Millisecond), 5*time.Second)
			v.log.Debug().Err(err).Str("lane", l.name).Dur("retry_in", pause).Msg("verify consumer fetch")
			_ = retry.Sleep(ctx, pause)
			continue
		}
		pause = 0
		v.start(h, msg, l)
	}
}

// start handles msg from lane l on a goroutine of its own, and gives the lane's limit back what the
// upstream call took.
func (v *Verifier) start(h *handlers, msg jetstream.Msg, l *lane) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		l.limit.release(v.handle(h.work, msg, l))
		if !l.slow {
			v.metrics.limit.Set(float64(l.limit.Limit()))
		}
	}()
}

// giveBack stops the iterator and naks the messages it had buffered, so they are redelivered now (to
// another verifier) rather than after AckWait.
func (v *Verifier) giveBack(it jetstream.MessagesContext) {
	it.Drain()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(time.Second))
		if err != nil {
			return
		}
		_ = msg.Nak()
		v.metrics.count(outcomeShutdown)
	}
}

// handle verifies one delivery from lane l and tells the server it is still at it every AckWait/3 (the
// wait for upstream budget can be long), so the webhook is not redelivered to a second handler meanwhile.
// ctx ends only at a hard shutdown. It returns how long the upstream call took (0 when none was made),
// for the lane's limit.
func (v *Verifier) handle(ctx context.Context, msg jetstream.Msg, l *lane) callTime {
	v.metrics.inFlight.Inc()
	defer v.metrics.inFlight.Dec()
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(v.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return v.process(ctx, msg, l)
}
