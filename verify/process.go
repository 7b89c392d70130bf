package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/text"
	bjs "github.com/evershield/bridge/jetstream"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// settleTimeout bounds an ack or a dead-letter publish that runs after the handler's own ctx ended.
const settleTimeout = 5 * time.Second

// process decides the fate of one delivery from lane l; both lanes share it, and differ only in how a
// job without a JOBS record gets its unknown-job token (see [Verifier] and admitUnknown). stop ends at
// the start of a shutdown, workCtx only at a hard shutdown; the work itself is bounded by
// HandlerTimeout, not counting a slow-lane wait for the budget.
func (v *Verifier) process(stop, workCtx context.Context, msg jetstream.Msg, l *lane) {
	ctx, cancel := context.WithTimeout(workCtx, v.cfg.HandlerTimeout)
	defer cancel()
	attempt := 1
	var storedAt time.Time
	if meta, err := msg.Metadata(); err == nil {
		attempt = int(min(meta.NumDelivered, 1<<30))
		storedAt = meta.Timestamp
	}
	receivedAt := storedAt
	if t, err := time.Parse(time.RFC3339Nano, msg.Headers().Get(bjs.HeaderReceivedAt)); err == nil {
		receivedAt = t
	}
	if receivedAt.IsZero() {
		receivedAt = v.cfg.Now()
	}
	log := v.log.With().Str("lane", l.name).Str("subject", msg.Subject()).Int("attempt", attempt).Logger()

	id, err := parseJobID(msg.Data())
	if err != nil {
		log.Warn().Err(err).Str("remote_addr", msg.Headers().Get(bjs.HeaderRemoteAddr)).Msg("malformed webhook dead-lettered")
		v.deadLetter(ctx, msg, "", ReasonMalformed, attempt, outcomeMalformed)
		return
	}
	log = log.With().Str("job_id", id).Logger()

	// One handler per job at a time in this process: a burst of duplicates waits here and then finds the
	// record delivered, costing no upstream call.
	unlock, err := v.jobLocks.Lock(ctx, id)
	if err != nil {
		v.retry(workCtx, msg, id, attempt, 0, log, "wait for job lock", err)
		return
	}
	defer unlock()

	rec, _, err := v.store.Get(ctx, id)
	known := err == nil
	if err != nil && !errors.Is(err, jobs.ErrNotFound) {
		v.retry(workCtx, msg, id, attempt, 0, log, "read job record", err)
		return
	}
	if known && rec.ResultOut() {
		v.metrics.outcomes.WithLabelValues(outcomeAlreadyDelivered).Inc()
		log.Debug().Str("state", string(rec.State)).Msg("result already out; webhook acked without upstream call")
		v.ack(ctx, msg, log)
		return
	}
	if v.notFound.Has(id) {
		// This webhook got its one GET already, and the answer was 404.
		v.deadLetterNotFound(ctx, msg, id, attempt, log)
		return
	}

	// A job the bridge has no record of may be legitimate (submitted elsewhere) or forged; either way it
	// spends the small unknown-job budget, not the verify budget of known jobs.
	if !known {
		if !v.admitUnknown(ctx, stop, msg, l, id, attempt, log) {
			return
		}
		if l.slow {
			// The wait for the budget is not the handler's work: HandlerTimeout starts again.
			cancel()
			var cancelWork context.CancelFunc
			ctx, cancelWork = context.WithTimeout(workCtx, v.cfg.HandlerTimeout)
			defer cancelWork()
		}
	}
	job, err := v.cfg.API.GetJob(ctx, id, upstream.ClassVerify)
	now := v.cfg.Now().UTC()
	if err != nil {
		if workCtx.Err() != nil {
			v.giveBackOne(msg)
			return
		}
		if known {
			v.recordAttempt(ctx, id, nil, err, receivedAt, now, log)
		}
		ue, isUpstream := errors.AsType[*upstream.Error](err)
		if isUpstream && ue.Status == 404 {
			v.notFound.Add(id)
			v.deadLetterNotFound(ctx, msg, id, attempt, log)
			return
		}
		if isUpstream && !ue.Retryable() {
			reason := ReasonUpstreamPrefix + strconv.Itoa(ue.Status)
			log.Error().Err(err).Str("reason", reason).Msg("upstream refused verification; webhook dead-lettered, job left to the reconciler")
			v.deadLetter(ctx, msg, id, reason, attempt, outcomeRejected)
			return
		}
		var retryAfter time.Duration
		if isUpstream {
			retryAfter = ue.RetryAfter
		}
		v.retry(workCtx, msg, id, attempt, retryAfter, log, "get job", err)
		return
	}
	if job.JobID != id {
		v.retry(workCtx, msg, id, attempt, 0, log, "get job", fmt.Errorf("upstream answered job %q for %q", job.JobID, id))
		return
	}

	if !known {
		if _, err := v.cfg.Deliverer.Ensure(ctx, job); err != nil {
			v.retry(workCtx, msg, id, attempt, 0, log, "create job record", err)
			return
		}
	}
	if err := v.recordAttempt(ctx, id, &job, nil, receivedAt, now, log); err != nil {
		v.retry(workCtx, msg, id, attempt, 0, log, "record attempt", err)
		return
	}
	if !job.Terminal() {
		log.Debug().Str("status", job.Status).Msg("job not terminal yet")
		v.retryOrExhaust(ctx, workCtx, msg, id, attempt, 0, log, outcomeNotTerminal, fmt.Errorf("job is %s", job.Status))
		return
	}

	outcome, err := v.cfg.Deliverer.Deliver(ctx, job, bjs.SourceWebhook, receivedAt)
	if err != nil {
		v.retry(workCtx, msg, id, attempt, 0, log, "deliver", err)
		return
	}
	published := v.cfg.Now()
	switch outcome {
	case jobs.Published:
		v.metrics.outcomes.WithLabelValues(outcomePublished).Inc()
		v.metrics.latency.Observe(published.Sub(receivedAt).Seconds())
		log.Debug().Str("status", job.Status).Msg("verified result published")
	case jobs.PublishedLate:
		v.metrics.outcomes.WithLabelValues(outcomeLate).Inc()
		v.metrics.latency.Observe(published.Sub(receivedAt).Seconds())
		log.Info().Str("status", job.Status).Msg("verified late result published")
	default:
		v.metrics.outcomes.WithLabelValues(outcomeAlreadyDelivered).Inc()
	}
	v.ack(ctx, msg, log)
}

// recordAttempt notes a GET /job attempt in the job's record: the answer (job) or the failure (callErr).
// It is a no-op for a job without a record.
func (v *Verifier) recordAttempt(ctx context.Context, id string, job *upstream.Job, callErr error, receivedAt, now time.Time, log zerolog.Logger) error {
	_, err := v.store.Update(ctx, id, func(r *jobs.Record) (bool, error) {
		r.Attempts++
		r.LastCheckedAt = &now
		if r.WebhookReceivedAt == nil {
			rt := receivedAt.UTC()
			r.WebhookReceivedAt = &rt
		}
		if job != nil {
			r.LastStatus, r.LastJob, r.LastError = job.Status, job.Raw, ""
		} else if callErr != nil {
			r.LastError = text.Truncate(callErr.Error(), 512)
		}
		return true, nil
	})
	if errors.Is(err, jobs.ErrNotFound) {
		return nil
	}
	if err != nil && job == nil {
		log.Warn().Err(err).Msg("record failed attempt")
	}
	return err
}

// retryOrExhaust naks msg for a later attempt, or dead-letters it when this was attempt MaxAttempts.
func (v *Verifier) retryOrExhaust(ctx, workCtx context.Context, msg jetstream.Msg, id string, attempt int, retryAfter time.Duration,
	log zerolog.Logger, outcome string, cause error) {
	if attempt >= v.cfg.MaxAttempts {
		log.Warn().Err(cause).Msg("verification attempts exhausted; webhook dead-lettered, job left to the reconciler")
		v.deadLetter(ctx, msg, id, ReasonAttemptsExhausted, attempt, outcomeExhausted)
		return
	}
	delay := v.backoff(attempt, retryAfter)
	if err := msg.NakWithDelay(delay); err != nil {
		log.Warn().Err(err).Msg("nak webhook; redelivered after AckWait")
	}
	v.metrics.outcomes.WithLabelValues(outcome).Inc()
	log.Debug().Err(cause).Dur("delay", delay).Msg("webhook verification deferred")
}

// retry handles a retryable failure: nak with backoff, or dead letter once attempts are exhausted, or,
// during a hard shutdown, an immediate nak.
func (v *Verifier) retry(workCtx context.Context, msg jetstream.Msg, id string, attempt int, retryAfter time.Duration, log zerolog.Logger, what string, err error) {
	if workCtx.Err() != nil {
		v.giveBackOne(msg)
		return
	}
	// A long upstream outage retries every pending webhook many times: warn on the first attempt and
	// every tenth, the rest at debug (the metrics count them all).
	ev := log.Debug()
	if attempt == 1 || attempt%10 == 0 {
		ev = log.Warn()
	}
	ev.Err(err).Msg(what)
	// The handler's ctx may be spent (HandlerTimeout); settling gets its own.
	ctx, cancel := context.WithTimeout(workCtx, settleTimeout)
	defer cancel()
	v.retryOrExhaust(ctx, workCtx, msg, id, attempt, retryAfter, log, outcomeRetry, fmt.Errorf("%s: %w", what, err))
}

// giveBackOne naks msg without delay: the process is shutting down and another verifier (or the next
// start) takes it.
func (v *Verifier) giveBackOne(msg jetstream.Msg) {
	_ = msg.Nak()
	v.metrics.outcomes.WithLabelValues(outcomeShutdown).Inc()
}

// backoff is the delay before attempt+1: full jitter over RetryBase*2^(attempt-1) capped at RetryMax,
// at least RetryBase/4 (so an unlucky draw cannot spin) and at least retryAfter.
func (v *Verifier) backoff(attempt int, retryAfter time.Duration) time.Duration {
	ceil := v.cfg.RetryMax
	if shift := attempt - 1; shift < 32 {
		if c := v.cfg.RetryBase << shift; c > 0 && c < ceil {
			ceil = c
		}
	}
	d := max(time.Duration(rand.Int64N(int64(ceil)+1)), v.cfg.RetryBase/4)
	return max(d, retryAfter)
}

// ack acknowledges msg and waits for the server's confirmation. A failed ack only means a redelivery,
// which the JOBS record or the not-found memory turns into another ack.
func (v *Verifier) ack(ctx context.Context, msg jetstream.Msg, log zerolog.Logger) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		log.Warn().Err(err).Msg("ack webhook; it will be redelivered and acked again")
	}
}

// deadLetterNotFound dead-letters a webhook whose job the upstream does not know.
func (v *Verifier) deadLetterNotFound(ctx context.Context, msg jetstream.Msg, id string, attempt int, log zerolog.Logger) {
	log.Warn().Str("remote_addr", msg.Headers().Get(bjs.HeaderRemoteAddr)).
		Str("modality", msg.Headers().Get(bjs.HeaderModality)).
		Msg("webhook for a job the upstream does not know (spoofed or foreign); dead-lettered, not published")
	v.deadLetter(ctx, msg, id, ReasonNotFound, attempt, outcomeNotFound)
}

// deadLetter stores the raw webhook in DEADLETTER on deadletter.<reason> and acks it. If the publish
// keeps failing the webhook is naked for a later attempt instead: it is never acked unstored. It also
// moves a webhook to the slow lane (reason unknown_job, outcome unknown_laned: not counted as a dead
// letter), and dead-letters one from the slow lane, keeping the webhook's original subject.
func (v *Verifier) deadLetter(ctx context.Context, msg jetstream.Msg, id, reason string, attempt int, outcome string) {
	dl := nats.NewMsg(bjs.DeadLetterSubject(reason))
	dl.Data = msg.Data()
	for _, h := range []string{bjs.HeaderReceivedAt, bjs.HeaderRemoteAddr, bjs.HeaderModality} {
		if val := msg.Headers().Get(h); val != "" {
			dl.Header.Set(h, val)
		}
	}
	dl.Header.Set(bjs.HeaderReason, reason)
	dl.Header.Set(bjs.HeaderAttempts, strconv.Itoa(attempt))
	orig := msg.Headers().Get(bjs.HeaderOriginalSubject)
	if orig == "" {
		orig = msg.Subject()
	}
	dl.Header.Set(bjs.HeaderOriginalSubject, orig)
	// The id names the message being dead-lettered (stream and sequence), so a redelivery of it collapses
	// while a redriven copy (a new WEBHOOKS message) that fails again is stored again.
	if meta, err := msg.Metadata(); err == nil {
		dl.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.%s.%s.%d", id, reason, meta.Stream, meta.Sequence.Stream))
	} else if id != "" {
		dl.Header.Set(jetstream.MsgIDHeader, id+"."+reason)
	}

	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*settleTimeout)
	defer cancel()
	var err error
	for try := 0; try < 3; try++ {
		if _, err = bjs.PublishMsg(pctx, v.cfg.JS, dl); err == nil {
			break
		}
		select {
		case <-pctx.Done():
		case <-time.After(time.Duration(try+1) * 200 * time.Millisecond):
		}
	}
	if err != nil {
		v.log.Error().Err(err).Str("job_id", id).Str("reason", reason).Msg("publish dead letter; webhook will be redelivered")
		if nerr := msg.NakWithDelay(v.backoff(attempt, 0)); nerr != nil {
			v.log.Warn().Err(nerr).Str("job_id", id).Msg("nak webhook")
		}
		v.metrics.outcomes.WithLabelValues(outcomeRetry).Inc()
		return
	}
	if outcome != outcomeUnknownLaned {
		v.metrics.deadLetters.WithLabelValues(reason).Inc()
	}
	v.metrics.outcomes.WithLabelValues(outcome).Inc()
	v.ack(ctx, msg, v.log.With().Str("job_id", id).Logger())
}

// parseJobID reads the top-level "job_id" of a webhook body (exact key, as ingest checks it) and requires
// a UUID, which is also a valid KV key and subject token.
func parseJobID(body []byte) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return "", fmt.Errorf("%w: %v", ErrMalformedWebhook, err)
	}
	raw, ok := obj["job_id"]
	if !ok {
		return "", fmt.Errorf("%w: no job_id", ErrMalformedWebhook)
	}
	var id string
	if err := json.Unmarshal(raw, &id); err != nil {
		return "", fmt.Errorf("%w: job_id is not a string", ErrMalformedWebhook)
	}
	if !jobs.ValidID(id) {
		return "", fmt.Errorf("%w: job_id %q is not a UUID", ErrMalformedWebhook, text.Truncate(id, 64))
	}
	return id, nil
}
