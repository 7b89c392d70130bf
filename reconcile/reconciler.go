package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/batch"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// Tuning that is not worth a Config field.
const (
	// retryDelay is how soon a deadline check runs again after the record's clock said not yet, and the
	// first delay after a failed delivery; further failures double it up to maxRetryDelay.
	retryDelay = 2 * time.Second
	// maxRetryDelay caps the backoff of a job whose delivery keeps failing at its deadline (RESULTS full,
	// JOBS unwritable): each retry costs a GET /job, so the cap bounds that traffic to one call per job
	// every two minutes, or a poll interval if that is longer.
	maxRetryDelay = 2 * time.Minute
	// busyDelay is how soon a deadline check runs when a sweep GET holds the job.
	busyDelay = 500 * time.Millisecond
	// watchBackoff is the pause before the lease watch is opened again after a failure.
	watchBackoff = time.Second
)

// Reconciler recovers missed webhooks by polling the upstream and times out jobs past their deadline,
// publishing through [jobs.Deliverer]. One replica at a time acts, holding the lease; the others keep
// their index warm. Create it with [New] and start it with [Reconciler.Run].
type Reconciler struct {
	cfg Config
	log zerolog.Logger
	m   *metrics
	idx *index

	leases   jetstream.KeyValue
	leaseTTL time.Duration

	runMu sync.Mutex // runMu makes Run exclusive
	// adoption remembers, between sweeps, what adoption has looked at; only sweeps touch it.
	adoption adoption
}

// New checks cfg, applies defaults and registers the metrics.
func New(cfg Config) (*Reconciler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	r := &Reconciler{
		cfg: cfg,
		log: cfg.Log.With().Str("component", "reconcile").Str("instance", cfg.Instance).Logger(),
		m:   m,
		idx: newIndex(cfg.LateWatch, cfg.PollInterval, m),
	}
	cfg.Watcher.Subscribe(r.follow)
	return r, nil
}

// Instance is the name this reconciler holds the lease under.
func (r *Reconciler) Instance() string { return r.cfg.Instance }

// Run competes for the lease and, while it holds it, sweeps and times out jobs. It blocks
// until ctx is cancelled, then stops acting, releases the lease if held (so a standby takes over at
// once) and returns nil. It returns an error only when the buckets cannot be opened.
func (r *Reconciler) Run(ctx context.Context) error {
	r.runMu.Lock()
	defer r.runMu.Unlock()
	if err := r.open(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	r.leaseLoop(ctx)
	return nil
}

// open reads the lease TTL from the lease bucket.
func (r *Reconciler) open(ctx context.Context) error {
	r.leases, r.leaseTTL = r.cfg.Leases, r.cfg.LeaseTTL
	st, err := r.leases.Status(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: bucket %s status: %w", r.leases.Bucket(), err)
	}
	switch ttl := st.TTL(); {
	case r.leaseTTL == 0 && ttl > 0:
		r.leaseTTL = ttl
	case r.leaseTTL == 0:
		r.leaseTTL = 10 * time.Second
		r.log.Warn().Msg("lease bucket has no TTL: a crashed leader's lease never expires; set one (natsx.Provision does)")
	case ttl != r.leaseTTL:
		r.log.Warn().Dur("lease_ttl", r.leaseTTL).Dur("bucket_ttl", ttl).Msg("LeaseTTL differs from the lease bucket's TTL")
	}
	return nil
}

// follow feeds the index from the process's JOBS watcher; a replay rebuilds it from empty.
func (r *Reconciler) follow(u jobs.Update) {
	switch u.Kind {
	case jobs.UpdateReplay:
		r.idx.reset()
	case jobs.UpdateLost:
		r.m.errors.WithLabelValues("watch").Inc()
	case jobs.UpdateRecord:
		if err := r.idx.apply(u.Key, u.Value, u.Deleted, r.cfg.Now()); err != nil {
			r.m.errors.WithLabelValues("watch").Inc()
			r.log.Warn().Err(err).Str("job_id", u.Key).Msg("undecodable JOBS record ignored")
		}
	}
}

// lead does the leader's work until ctx ends: the sweep loop, the deadline loop and the compaction.
func (r *Reconciler) lead(ctx context.Context) {
	select {
	case <-r.cfg.Watcher.Ready():
	case <-ctx.Done():
		return
	}
	firstSweep := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { r.deadlineLoop(ctx, firstSweep) })
	if r.cfg.Compactor != nil {
		wg.Go(func() { r.cfg.Compactor.Run(ctx, r.cfg.PollInterval) })
	}
	r.sweepLoop(ctx, firstSweep)
	wg.Wait()
	// The failed deliveries were this leader's; the next one counts its own.
	r.idx.forgetFailures()
}

// sweepLoop sweeps at once and every PollInterval, and runs a check pass (no in-flight list) when the
// grace of a job found missing ends before the next sweep.
func (r *Reconciler) sweepLoop(ctx context.Context, firstSweep chan struct{}) {
	ticker := time.NewTicker(r.cfg.PollInterval)
	defer ticker.Stop()
	check := time.NewTimer(time.Hour)
	check.Stop()
	defer check.Stop()

	r.awaitFidelity(ctx)
	var next time.Time
	if !r.pollOnly() {
		next = r.sweep(ctx, true)
	}
	close(firstSweep)
	for {
		if r.pollOnly() {
			// Poll-only: the export replaces the list sweep for as long as it is faithful.
			check.Stop()
			r.exportLoop(ctx)
			if ctx.Err() != nil {
				return
			}
			next = r.sweep(ctx, true)
		}
		if !next.IsZero() {
			check.Reset(max(next.Sub(r.cfg.Now()), 0))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			check.Stop()
			next = r.sweep(ctx, true)
		case <-check.C:
			next = r.sweep(ctx, false)
		}
	}
}

// grace is how long a job may be missing from the in-flight list before a sweep fetches it: WebhookGrace,
// but while calls are short and batches run, at least a round's longest wait and 5 s more, so that a
// webhook waiting for its round (batch.DefaultMaxWait) is not fetched again.
func (r *Reconciler) grace() time.Duration {
	if r.cfg.Export != nil && r.cfg.Fidelity.Faithful() && r.cfg.Budget.Available() < exportIdle {
		return max(r.cfg.WebhookGrace, batch.DefaultMaxWait+5*time.Second)
	}
	return r.cfg.WebhookGrace
}

// awaitFidelity waits, in poll-only mode, for the first check of whether the export is faithful (at most
// a poll interval), so the first sweep is the right kind.
func (r *Reconciler) awaitFidelity(ctx context.Context) {
	if !r.cfg.PollOnly || r.cfg.Export == nil {
		return
	}
	t := time.NewTimer(r.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-r.cfg.Fidelity.Checked():
	}
}

// sweep finds pending jobs missing from the in-flight list for longer than WebhookGrace and fetches
// each once: a terminal one is delivered with source poll. A full sweep asks for the in-flight list
// first (only when something is pending or late-watched); a check pass reuses the last list's marks.
// It stops early when the budget has no token left, leaving the rest to the next sweep. It returns when
// the next check pass is due (zero: none).
func (r *Reconciler) sweep(ctx context.Context, full bool) time.Time {
	start := time.Now()
	pending, late := r.idx.counts()
	if pending+late == 0 && !r.cfg.Adopt {
		if full {
			r.m.sweeps.WithLabelValues("skipped").Inc()
			r.m.oldest.Set(0)
		}
		return time.Time{}
	}
	var inflight map[string]struct{}
	var gen uint32
	calls := 0
	if full {
		gen = r.idx.beginSweep()
		var err error
		inflight, err = r.inFlight(ctx, start)
		if err != nil {
			if ctx.Err() == nil {
				r.m.sweeps.WithLabelValues("error").Inc()
				r.m.errors.WithLabelValues("inflight").Inc()
				r.log.Warn().Err(err).Msg("in-flight list failed; next sweep retries")
			}
			return time.Time{}
		}
		if inflight == nil {
			inflight = map[string]struct{}{}
		}
		calls = max(1, (len(inflight)+upstream.InFlightPage-1)/upstream.InFlightPage)
	}
	now := r.cfg.Now()
	plan := r.idx.mark(inflight, gen, now, r.grace())
	if full {
		age := 0.0
		if plan.oldest > 0 {
			age = max(0, now.Sub(time.Unix(0, plan.oldest)).Seconds())
		}
		r.m.oldest.Set(age)
	}

	// Several missed jobs are settled by one export call when its rows are faithful; what it leaves (failed
	// jobs, jobs it did not show) is fetched one by one.
	tasks := plan.tasks
	if len(tasks) >= 2 && r.cfg.Export != nil && r.cfg.Fidelity.Faithful() {
		calls++
		tasks = r.exportMissed(ctx, tasks)
	}
	done := r.fetchAll(ctx, tasks)
	calls += done
	if full {
		r.m.sweeps.WithLabelValues("ok").Inc()
	}
	r.m.sweepDuration.Observe(time.Since(start).Seconds())
	r.m.calls.Observe(float64(calls))
	ev := r.log.Debug()
	if done > 0 {
		ev = r.log.Info()
	}
	ev.Bool("full", full).Int("pending", pending).Int("late_watch", late).Int("in_flight", len(inflight)).
		Int("fetched", done).Int("calls", calls).Dur("took", time.Since(start)).Msg("sweep")
	if plan.nextCheck == 0 {
		return time.Time{}
	}
	return time.Unix(0, plan.nextCheck)
}

// fetchAll fetches missed jobs, by up to Workers at once: one at a time, a slow upstream (seconds per
// call) would let a backlog of missed jobs outgrow the sweeps. It stops when the budget has no call free,
// leaving the rest to the next sweep, and returns how many it fetched.
func (r *Reconciler) fetchAll(ctx context.Context, tasks []task) int {
	done := 0
	workers := make(chan struct{}, r.cfg.Workers)
	var wg sync.WaitGroup
	for i, t := range tasks {
		workers <- struct{}{} // a free worker first, so Available counts the calls still running
		if ctx.Err() != nil || r.cfg.Budget.Available() < 1 {
			<-workers
			r.idx.unbusy(tasks[i:])
			if ctx.Err() == nil {
				r.log.Info().Int("left", len(tasks)-i).Msg("upstream budget short: leaving missed jobs to the next sweep")
			}
			break
		}
		done++
		wg.Go(func() {
			defer func() { <-workers }()
			r.fetchMissed(ctx, t)
		})
	}
	wg.Wait()
	return done
}

// fetchMissed fetches one job found missing and delivers it when terminal.
func (r *Reconciler) fetchMissed(ctx context.Context, t task) {
	log := r.log.With().Str("job_id", t.id).Str("modality", t.mod).Bool("late_watch", t.flags&flagLate != 0).Logger()
	job, err := r.cfg.API.GetJob(ctx, t.id, upstream.ClassPoll)
	switch {
	case errors.Is(err, upstream.ErrNotFound):
		r.m.notFound.Inc()
		log.Warn().Msg("job unknown upstream (404); asking again next sweep")
		r.idx.fetched(t, r.cfg.Now(), false, true)
		return
	case err != nil:
		r.m.errors.WithLabelValues("get_job").Inc()
		log.Warn().Err(err).Msg("get job; next sweep retries")
		r.idx.fetched(t, r.cfg.Now(), false, false)
		return
	case !job.Terminal():
		log.Debug().Str("status", job.Status).Msg("job not terminal; still running")
		r.idx.fetched(t, r.cfg.Now(), true, false)
		return
	}
	out, err := r.cfg.Deliverer.Deliver(ctx, job, contract.SourcePoll, r.cfg.Now())
	r.idx.fetched(t, r.cfg.Now(), false, false)
	if err != nil {
		r.m.errors.WithLabelValues("deliver").Inc()
		log.Warn().Err(err).Msg("deliver polled result; next sweep retries")
		return
	}
	r.count(out)
	log.Info().Str("status", job.Status).Str("outcome", out.String()).Msg("missed webhook recovered by polling")
}

func (r *Reconciler) count(out jobs.Outcome) {
	switch out {
	case jobs.Published:
		r.m.recovered.Inc()
	case jobs.PublishedLate:
		r.m.lateRecovered.Inc()
	}
}

// deadlineLoop runs the deadline checks: one timer armed for the earliest due time of the heap, reset
// when an earlier one arrives. Due jobs are checked by at most Workers goroutines, so a backlog of
// overdue jobs after an outage is paced by the upstream budget rather than fired in a burst.
func (r *Reconciler) deadlineLoop(ctx context.Context, firstSweep <-chan struct{}) {
	// Let the first sweep mark what is in flight (so overdue in-flight jobs need no GET), but not for
	// longer than a poll interval.
	select {
	case <-firstSweep:
	case <-time.After(r.cfg.PollInterval):
	case <-ctx.Done():
		return
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	batch := r.cfg.Workers * 16
	for ctx.Err() == nil {
		if due := r.idx.popDue(r.cfg.Now(), batch, busyDelay); len(due) > 0 {
			r.checkAll(ctx, due)
			continue
		}
		wait := time.Hour
		if next, ok := r.idx.nextDue(); ok {
			wait = max(next.Sub(r.cfg.Now()), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
		case <-r.idx.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// checkAll runs the deadline checks of due with Workers goroutines. Jobs not reached before ctx ends
// go back into the heap.
func (r *Reconciler) checkAll(ctx context.Context, due []task) {
	ch := make(chan task)
	var wg sync.WaitGroup
	for range min(r.cfg.Workers, len(due)) {
		wg.Go(func() {
			for t := range ch {
				r.checkDeadline(ctx, t)
			}
		})
	}
	for i, t := range due {
		if ctx.Err() != nil {
			for _, t := range due[i:] {
				r.idx.release(t, r.cfg.Now(), 0)
			}
			break
		}
		ch <- t
	}
	close(ch)
	wg.Wait()
}

// checkDeadline makes the last check of a job at its deadline: a terminal upstream answer is delivered
// (source poll); otherwise the job times out with the upstream's last answer (or what JOBS recorded).
// A delivery that fails is retried with a backoff (see [index.backOff]), each retry a new last check, so
// the job still finishes or times out once publishing works again.
func (r *Reconciler) checkDeadline(ctx context.Context, t task) {
	log := r.log.With().Str("job_id", t.id).Str("modality", t.mod).Logger()
	if ctx.Err() != nil {
		r.idx.release(t, r.cfg.Now(), 0)
		return
	}
	last, terminal := r.finalCheck(ctx, t, log)
	if ctx.Err() != nil {
		r.idx.release(t, r.cfg.Now(), 0)
		return
	}
	if terminal {
		out, err := r.cfg.Deliverer.Deliver(ctx, *last, contract.SourcePoll, r.cfg.Now())
		switch {
		case err == nil:
			r.count(out)
			log.Info().Str("status", last.Status).Str("outcome", out.String()).Msg("job finished by its deadline; delivered by polling")
			// Back into the heap with a long delay; the watch removes it once JOBS says delivered.
			r.idx.delivered(t, r.cfg.Now(), r.cfg.PollInterval)
		case ctx.Err() != nil:
			r.idx.release(t, r.cfg.Now(), 0)
		default:
			r.m.errors.WithLabelValues("deliver").Inc()
			r.failed(t, log.Warn().Err(err), "deliver at deadline")
		}
		return
	}
	out, err := r.cfg.Deliverer.TimeOut(ctx, t.id, last)
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return // the record is gone; so is the entry, once the watch says so
	case err != nil && ctx.Err() != nil:
		r.idx.release(t, r.cfg.Now(), 0) // stopped acting mid-way; the next leader checks again
	case err != nil:
		r.m.errors.WithLabelValues("timeout").Inc()
		r.failed(t, log.Warn().Err(err), "time out job")
	case out == jobs.StillPending:
		// The record's deadline is ahead of ours (clocks, or the record moved it): the watch updates
		// the entry; check again shortly in any case.
		log.Debug().Msg("deadline not reached by the record's clock")
		r.idx.delivered(t, r.cfg.Now(), retryDelay)
	case out == jobs.Published:
		r.m.timeouts.Inc()
		ev := log.Info().Str("outcome", out.String())
		if last != nil {
			ev = ev.Str("status", last.Status)
		}
		ev.Msg("job timed out")
		r.idx.delivered(t, r.cfg.Now(), r.cfg.PollInterval)
	default:
		r.idx.delivered(t, r.cfg.Now(), r.cfg.PollInterval)
	}
}

// failed puts a job whose delivery failed at its deadline back with a backoff and logs ev with the
// delay.
func (r *Reconciler) failed(t task, ev *zerolog.Event, msg string) {
	delay, n := r.idx.backOff(t, r.cfg.Now(), r.cfg.retryMin, r.cfg.retryMax)
	ev.Int("failures", n).Dur("retry_in", delay).Msg(msg + "; retrying")
}

// finalCheck is the last GET /job/{id} of a job at its deadline. It returns the answer (nil when there
// is none) and whether it is terminal. With a token at hand it asks at once (waiting at most
// FinalCheckWait for the budget). Without one, a job seen in flight at the last sweep times out without
// asking (it is almost surely still running), while a job not seen in flight (its result is likely
// there, e.g. overdue after an outage) waits its turn for the budget, up to a poll interval.
func (r *Reconciler) finalCheck(ctx context.Context, t task, log zerolog.Logger) (*upstream.Job, bool) {
	// A job the sweeps gave up on after several 404s is still asked about here: the last check is what
	// stands between a job the upstream found again and a timeout.
	wait := r.cfg.FinalCheckWait
	if r.cfg.Budget.Available() < 1 {
		if t.flags&flagInFlight != 0 {
			log.Debug().Msg("budget short and job in flight: timing out without a last check")
			return nil, false
		}
		wait = max(wait, r.cfg.PollInterval)
	}
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	job, err := r.cfg.API.GetJob(cctx, t.id, upstream.ClassPoll)
	// A passing upstream hiccup (5xx, 429, a timeout) must not turn a finished job into a timeout: ask
	// again, backing off, for as long as the wait allows.
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for retryable(err) && cctx.Err() == nil {
		wait := backoff.Next()
		if ue, ok := errors.AsType[*upstream.Error](err); ok && ue.RetryAfter > wait {
			wait = ue.RetryAfter
		}
		if retry.Sleep(cctx, wait) != nil {
			break
		}
		job, err = r.cfg.API.GetJob(cctx, t.id, upstream.ClassPoll)
	}
	switch {
	case errors.Is(err, upstream.ErrNotFound):
		r.m.notFound.Inc()
		log.Warn().Msg("job unknown upstream (404) at its deadline")
		return nil, false
	case err != nil:
		if ctx.Err() == nil {
			r.m.errors.WithLabelValues("get_job").Inc()
			log.Warn().Err(err).Msg("last check at deadline failed; timing out on the recorded state")
		}
		return nil, false
	}
	return &job, job.Terminal()
}

// retryable reports whether err is an upstream failure worth asking again about.
func retryable(err error) bool {
	ue, ok := errors.AsType[*upstream.Error](err)
	return ok && ue.Retryable()
}
