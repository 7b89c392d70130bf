package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	bjs "github.com/evershield/bridge/jetstream"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// VerifierConfig configures a [Verifier]. JS, API and Deliverer are required; every other field has a
// default.
type VerifierConfig struct {
	// JS is the JetStream context of the consumer, the dead-letter publishes and the acknowledgements.
	JS jetstream.JetStream
	// API is the budgeted upstream client; the verifier calls GetJob at [upstream.ClassVerify] only.
	API upstream.API
	// Deliverer is the one publish path for results; its Store is the JOBS store the verifier records
	// attempts in.
	Deliverer *jobs.Deliverer
	// Log receives the verifier's events, tagged component=verify.
	Log zerolog.Logger
	// Metrics registers the bridge_verify_* and bridge_deadletter_total collectors; nil registers nothing.
	Metrics prometheus.Registerer
	// Now is the clock for recorded times and latencies; default time.Now.
	Now func() time.Time

	// Consumer is the durable name of the pull consumer on WEBHOOKS; default [bjs.ConsumerVerify].
	Consumer string
	// Concurrency bounds the webhooks verified at once by this process; default 64.
	Concurrency int
	// MaxAckPending of the consumer. Messages waiting out a NakWithDelay count towards it, so it must be
	// well above Concurrency; default max(1000, 32*Concurrency).
	MaxAckPending int
	// AckWait of the consumer; a handler still working signals progress every AckWait/3. Default 30s.
	AckWait time.Duration
	// MaxAttempts is how many deliveries of one webhook may fail (upstream error) or find the job
	// unfinished before the webhook is dead-lettered with reason attempts_exhausted; default 20.
	MaxAttempts int
	// RetryBase and RetryMax shape the redelivery delay: full jitter over RetryBase*2^(attempt-1),
	// capped at RetryMax, and never below RetryBase/4 or the upstream's Retry-After. Defaults 1s and 5m.
	RetryBase time.Duration
	RetryMax  time.Duration
	// HandlerTimeout bounds the handling of one delivery, including the wait for upstream budget; a
	// handler that runs out is retried later. Default 5m.
	HandlerTimeout time.Duration
	// ShutdownTimeout is how long Run waits, after its ctx is cancelled, for in-flight handlers before
	// cancelling them and giving their webhooks back (nak). Default 10s.
	ShutdownTimeout time.Duration

	// UnknownRPM is the budget, in upstream calls per minute for this process, for verifying webhooks whose
	// job has no JOBS record (jobs submitted elsewhere, or forged ids); see [Verifier]. 0 means
	// DefaultUnknownRPM; [UnknownOff] never verifies them (dead letter unknown_job, no upstream call).
	UnknownRPM int
	// UnknownBurst is how many such calls may be spent at once; default max(1, UnknownRPM/12), 5 seconds'
	// worth.
	UnknownBurst int
	// UnknownMaxWaiting bounds the unknown-job webhooks this process keeps waiting (naked with delay, so
	// in the consumer's ack-pending set) for the unknown-job budget; past it they are dead-lettered with
	// reason unknown_job at once. Default MaxAckPending/4; at most MaxAckPending/2, so a flood of forged
	// ids cannot fill MaxAckPending and stall the webhooks of known jobs.
	UnknownMaxWaiting int
}

func (c *VerifierConfig) setDefaults() {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Consumer == "" {
		c.Consumer = bjs.ConsumerVerify
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = max(1000, 32*c.Concurrency)
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
		c.RetryMax = 5 * time.Minute
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
	if c.UnknownBurst == 0 && c.UnknownRPM > 0 {
		c.UnknownBurst = max(1, c.UnknownRPM/12)
	}
	if c.UnknownMaxWaiting == 0 {
		c.UnknownMaxWaiting = max(1, c.MaxAckPending/4)
	}
}

// Validate reports the first invalid field, after defaults are applied.
func (c *VerifierConfig) Validate() error {
	switch {
	case c.JS == nil:
		return fmt.Errorf("%w: verifier: JS: required", ErrInvalidConfig)
	case c.API == nil:
		return fmt.Errorf("%w: verifier: API: required", ErrInvalidConfig)
	case c.Deliverer == nil:
		return fmt.Errorf("%w: verifier: Deliverer: required", ErrInvalidConfig)
	case c.Concurrency < 1:
		return fmt.Errorf("%w: verifier: Concurrency %d: must be at least 1", ErrInvalidConfig, c.Concurrency)
	case c.MaxAckPending < 2*c.Concurrency:
		return fmt.Errorf("%w: verifier: MaxAckPending %d: must be at least twice Concurrency (%d)", ErrInvalidConfig,
			c.MaxAckPending, c.Concurrency)
	case c.AckWait < time.Second:
		return fmt.Errorf("%w: verifier: AckWait %v: must be at least 1s", ErrInvalidConfig, c.AckWait)
	case c.MaxAttempts < 1:
		return fmt.Errorf("%w: verifier: MaxAttempts %d: must be at least 1", ErrInvalidConfig, c.MaxAttempts)
	case c.RetryBase <= 0 || c.RetryMax < c.RetryBase:
		return fmt.Errorf("%w: verifier: RetryBase %v, RetryMax %v: need 0 < RetryBase <= RetryMax", ErrInvalidConfig,
			c.RetryBase, c.RetryMax)
	case c.HandlerTimeout < time.Second:
		return fmt.Errorf("%w: verifier: HandlerTimeout %v: must be at least 1s", ErrInvalidConfig, c.HandlerTimeout)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("%w: verifier: ShutdownTimeout %v: must not be negative", ErrInvalidConfig, c.ShutdownTimeout)
	case c.UnknownRPM < 1 && c.UnknownRPM != UnknownOff:
		return fmt.Errorf("%w: verifier: UnknownRPM %d: must be positive or UnknownOff", ErrInvalidConfig, c.UnknownRPM)
	case c.UnknownBurst < 0:
		return fmt.Errorf("%w: verifier: UnknownBurst %d: must not be negative", ErrInvalidConfig, c.UnknownBurst)
	case c.UnknownMaxWaiting < 1 || c.UnknownMaxWaiting > c.MaxAckPending/2:
		return fmt.Errorf("%w: verifier: UnknownMaxWaiting %d: must be 1 to MaxAckPending/2 (%d)", ErrInvalidConfig,
			c.UnknownMaxWaiting, c.MaxAckPending/2)
	}
	return nil
}

// Verifier is the verify role. It takes every raw webhook from the durable pull consumer
// [bjs.ConsumerVerify] on WEBHOOKS, asks the upstream for the truth (GET /job/{id}) and publishes that
// through [jobs.Deliverer.Deliver]. Several verifiers, in one process or many, share the consumer.
//
// For each raw webhook, in order:
//
//   - no usable job_id in the body: dead letter (malformed), ack. No upstream call.
//   - the job's JOBS record says its result is out (delivered, or timed out with the late result out):
//     ack. No upstream call, so duplicate floods cost nothing but a KV read.
//   - no JOBS record: the unknown-job budget decides first (below); a webhook it cannot take now is
//     deferred or dead-lettered (unknown_job) without an upstream call.
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
// Unknown job ids, and why forged ones cannot spend the budget without bound: a webhook whose job has no
// JOBS record cannot be refused outright (jobs submitted elsewhere are legitimate, and the upstream's 404
// is the only proof of forgery), but anyone can post one, with a fresh random id each time so the
// duplicate window does not help. So such webhooks spend their own small token bucket, UnknownRPM calls
// per minute (default [DefaultUnknownRPM]; cmd/bridge defaults it to a tenth of BRIDGE_API_RPM) with a
// burst of UnknownBurst, before their GET (which then queues at ClassVerify with the rest). Over any
// window W this process makes at most UnknownBurst + UnknownRPM×W/1min upstream calls for unknown ids,
// whatever the flood; known jobs keep the rest of the budget. A webhook that finds the bucket empty is
// never dropped: it is naked with a delay (at least the backoff, and roughly when the bucket could
// serve it behind the others waiting) and tried again; after MaxAttempts deliveries it is dead-lettered
// as attempts_exhausted. Such waiting webhooks sit in the consumer's ack-pending set, so a flood could
// fill MaxAckPending and stall the webhooks of known jobs behind it; to prevent that, at most
// UnknownMaxWaiting (default MaxAckPending/4, at most MaxAckPending/2) wait per process, and an
// unknown-id webhook that finds the bucket empty and the backlog full is dead-lettered at once with
// reason unknown_job, costing no upstream call. With several verifier processes the bound is per
// process: keep processes × UnknownMaxWaiting well under MaxAckPending. UnknownRPM = [UnknownOff]
// never verifies unknown ids: each is dead-lettered as unknown_job. Every dead letter keeps the raw
// webhook for an operator to replay.
//
// Within one process, webhooks of the same job are verified one at a time, so a burst of duplicates
// costs one GET; across processes the JOBS record and Nats-Msg-Id keep the result single.
type Verifier struct {
	cfg      VerifierConfig
	log      zerolog.Logger
	metrics  *verifyMetrics
	store    *jobs.Store
	jobLocks keyedMutex
	notFound *recentSet
	// unknownBudget is the token bucket of UnknownRPM; nil when it is UnknownOff.
	unknownBudget  *tokenBucket
	unknownWaiting *waitingSet
}

// NewVerifier checks cfg and registers the metrics. It does not touch NATS; Run does.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newVerifyMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("verifier metrics: %w", err)
	}
	v := &Verifier{
		cfg:            cfg,
		log:            cfg.Log.With().Str("component", "verify").Logger(),
		metrics:        m,
		store:          cfg.Deliverer.Store(),
		notFound:       newRecentSet(4096, 10*time.Minute),
		unknownWaiting: newWaitingSet(),
	}
	if cfg.UnknownRPM != UnknownOff {
		v.unknownBudget = newTokenBucket(cfg.UnknownRPM, cfg.UnknownBurst)
	}
	return v, nil
}

// ConsumerConfig is the configuration the verifier creates or updates its durable consumer with.
func (v *Verifier) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       v.cfg.Consumer,
		Description:   "bridge verifier: raw webhooks to verify against the upstream",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       v.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: v.cfg.MaxAckPending,
		FilterSubject: bjs.SubjectWebhooks + ">",
	}
}

// Run consumes and verifies webhooks until ctx is cancelled, then shuts down in two phases: it stops
// fetching and gives back (nak) fetched webhooks no handler has started, then waits up to
// ShutdownTimeout for in-flight handlers, after which it cancels them and they nak their webhooks. It
// returns nil on such a shutdown, and an error only when the consumer cannot be set up because the
// WEBHOOKS stream does not exist. Lost connections and a deleted consumer are retried.
func (v *Verifier) Run(ctx context.Context) error {
	// Handlers run on workCtx, which outlives ctx by up to ShutdownTimeout, so an in-flight publish
	// is not cut short by the shutdown signal itself.
	workCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	var wg sync.WaitGroup
	sem := make(chan struct{}, v.cfg.Concurrency)

	var runErr error
	for wait := time.Duration(0); ctx.Err() == nil; {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			if ctx.Err() != nil {
				break
			}
		}
		wait = min(max(2*wait, 100*time.Millisecond), 5*time.Second)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := v.cfg.JS.CreateOrUpdateConsumer(cctx, bjs.StreamWebhooks, v.ConsumerConfig())
		cancel()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			runErr = fmt.Errorf("verify consumer %s: %w", v.cfg.Consumer, err)
			break
		}
		if err != nil {
			if ctx.Err() == nil {
				v.log.Warn().Err(err).Dur("retry_in", wait).Msg("create verify consumer")
			}
			continue
		}
		v.log.Info().Str("consumer", v.cfg.Consumer).Int("concurrency", v.cfg.Concurrency).Msg("verifier consuming")
		if err := v.consume(ctx, workCtx, cons, sem, &wg); err != nil && ctx.Err() == nil {
			v.log.Warn().Err(err).Dur("retry_in", wait).Msg("verify consumer stopped; recreating")
			continue
		}
		wait = 0
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
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

// consume runs one message iterator until ctx is cancelled (then it returns nil after giving back what
// was fetched but not started) or the iterator fails.
func (v *Verifier) consume(ctx, workCtx context.Context, cons jetstream.Consumer, sem chan struct{}, wg *sync.WaitGroup) error {
	// Prefetch no more than one batch of Concurrency: other verifier processes get their share, and a
	// fetched message never waits long for a worker.
	it, err := cons.Messages(jetstream.PullMaxMessages(v.cfg.Concurrency))
	if err != nil {
		return fmt.Errorf("messages: %w", err)
	}
	defer it.Stop()
	for {
		// Take a worker slot before fetching, so a fetched message is started at once.
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			v.giveBack(it)
			return nil
		}
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			<-sem
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			v.handle(workCtx, msg)
		}()
	}
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
		v.metrics.outcomes.WithLabelValues(outcomeShutdown).Inc()
	}
}

// handle verifies one delivery: it bounds the work by HandlerTimeout and tells the server it is still at
// it every AckWait/3 (the wait for upstream budget can be long), so the webhook is not redelivered to a
// second handler meanwhile.
func (v *Verifier) handle(workCtx context.Context, msg jetstream.Msg) {
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
	ctx, cancel := context.WithTimeout(workCtx, v.cfg.HandlerTimeout)
	defer cancel()
	v.process(ctx, workCtx, msg)
}
