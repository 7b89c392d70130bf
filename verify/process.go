package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/internal/text"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream"
)

// settleTimeout bounds an ack or a dead-letter publish that runs after the handler's own ctx ended.
const settleTimeout = 5 * time.Second

// delivery is one message from a lane and what the verifier knows of it before deciding.
type delivery struct {
	msg  jetstream.Msg
	lane *lane
	// id is the job's id; "" when the body has none (parseErr says why).
	id       string
	parseErr error
	// attempt is the server's delivery count of the message (shared by every verifier, across restarts).
	attempt    int
	receivedAt time.Time
	log        zerolog.Logger
	// exported is the job's row of an export round the slow lane found it in; nil otherwise.
	exported *upstream.Job
}

// action is what settle does with a delivery.
type action int

const (
	// actAck: the delivery is done (its result is out, or it is known to need nothing more).
	actAck action = iota
	// actRetry: try again later: a delayed nak with backoff, or, after MaxAttempts, a dead letter
	// attempts_exhausted.
	actRetry
	// actDeadLetter: store the webhook in DEADLETTER under reason, then ack.
	actDeadLetter
	// actLane: move an unknown job's webhook to the slow lane (outcome unknown_laned), then ack.
	actLane
	// actGiveBack: nak at once, for another verifier (or the next start): the verifier is stopping.
	actGiveBack
)

// verdict is what decide found about a delivery; settle carries it out.
type verdict struct {
	action  action
	outcome outcome
	reason  string // actDeadLetter: the dead-letter reason
	// retryAfter is the least wait before the next attempt (actRetry), e.g. the upstream's Retry-After.
	retryAfter time.Duration
	// cause says why, for the log: the failure of an actRetry, the reason of a dead letter.
	cause error
	// published marks a result published by this delivery: its webhook-to-result latency is observed.
	published bool
	// call is how long the GET /job took and waited for budget; zero when none was made.
	call callTime
}

// callTime is how long an upstream call took, the wait for budget included, and how long it waited.
type callTime struct {
	latency, budgetWait time.Duration
}

func ack(o outcome) verdict { return verdict{action: actAck, outcome: o} }

func deadLetter(reason string, o outcome, cause error) verdict {
	return verdict{action: actDeadLetter, reason: reason, outcome: o, cause: cause}
}

func retryLater(what string, err error) verdict {
	v := verdict{action: actRetry, outcome: outcomeRetry, cause: fmt.Errorf("%s: %w", what, err)}
	if ue, ok := errors.AsType[*upstream.Error](err); ok {
		v.retryAfter = ue.RetryAfter
	}
	return v
}

// newDelivery reads what the message says about itself.
func (v *Verifier) newDelivery(msg jetstream.Msg, l *lane) delivery {
	d := delivery{msg: msg, lane: l, attempt: 1}
	if meta, err := msg.Metadata(); err == nil {
		d.attempt = int(min(meta.NumDelivered, 1<<30))
		d.receivedAt = meta.Timestamp
	}
	if t, err := time.Parse(time.RFC3339Nano, msg.Headers().Get(contract.HeaderReceivedAt)); err == nil {
		d.receivedAt = t
	}
	if d.receivedAt.IsZero() {
		d.receivedAt = v.cfg.Now()
	}
	d.id, d.parseErr = parseJobID(msg.Data())
	ctx := v.log.With().Str("lane", l.name).Str("subject", msg.Subject()).Int("attempt", d.attempt)
	if d.id != "" {
		ctx = ctx.Str("job_id", d.id)
	}
	d.log = ctx.Logger()
	return d
}

// process decides the fate of one delivery from lane l, then settles it; both lanes share it (see
// [Verifier]). Webhooks of the same job are handled one at a time in this process, so a burst of
// duplicates waits here and then finds the result out, costing no upstream call. ctx ends only at a hard
// shutdown (the lane says when the shutdown starts). It returns the verdict's upstream call time.
func (v *Verifier) process(ctx context.Context, msg jetstream.Msg, l *lane) callTime {
	d := v.newDelivery(msg, l)
	if d.id != "" {
		lctx, cancel := context.WithTimeout(ctx, v.cfg.HandlerTimeout)
		unlock, err := v.jobLocks.Lock(lctx, d.id)
		cancel()
		if err != nil {
			v.settle(ctx, d, retryLater("wait for job lock", err))
			return callTime{}
		}
		defer unlock()
	}
	vd := v.decide(ctx, d)
	v.settle(ctx, d, vd)
	return vd.call
}

// decide finds what becomes of a delivery: it reads the job's record, spends an upstream call when one
// is needed, and publishes the result through the Deliverer, but it never acknowledges the message:
// that is settle's. ctx ends at a hard shutdown; the work is bounded by HandlerTimeout, not counting a
// slow-lane wait for the unknown-job budget. Once the record is read, the rest is the verification's
// span (see startSpan).
func (v *Verifier) decide(ctx context.Context, d delivery) (vd verdict) {
	if d.parseErr != nil {
		return deadLetter(ReasonMalformed, outcomeMalformed, d.parseErr)
	}
	if wait := v.authPause.remaining(v.cfg.Now()); wait > 0 {
		return verdict{action: actRetry, outcome: outcomeAuthPaused, retryAfter: wait, cause: errAuthPaused}
	}
	rctx, cancel := context.WithTimeout(ctx, v.cfg.HandlerTimeout)
	defer cancel()
	rec, rev, err := v.store.Get(rctx, d.id)
	known := err == nil
	if err == nil || errors.Is(err, jobs.ErrNotFound) {
		sctx, span := v.startSpan(ctx, d, held{rec, rev})
		if sctx != ctx {
			ctx, rctx = sctx, trace.ContextWithSpan(rctx, span)
		}
		defer func() { endSpan(span, vd) }()
	}
	switch {
	case err != nil && !errors.Is(err, jobs.ErrNotFound):
		return retryLater("read job record", err)
	case known && rec.ResultOut():
		return ack(outcomeAlreadyDelivered)
	case v.notFound.Has(d.id):
		// This webhook got its one GET already, and the answer was 404.
		return deadLetter(ReasonNotFound, outcomeNotFound, errNotFound)
	case !known:
		// A job without a record may be one delivered and compacted into the history (read after the
		// record, never before: see jobs.Deliverer): a duplicate, with no upstream call.
		if out, err := v.cfg.Deliverer.InHistory(rctx, d.id); err != nil {
			return retryLater("look up the history", err)
		} else if out {
			return ack(outcomeAlreadyDelivered)
		}
		// Else it may be legitimate (submitted elsewhere) or forged; either way it spends the small
		// unknown-job budget, not the verify budget of known jobs.
		if vd, ok := v.admitUnknown(rctx, &d); !ok {
			return vd
		}
		if d.msg.Headers().Get(contract.HeaderAuthenticated) != "" {
			v.metrics.provenance.WithLabelValues(d.msg.Headers().Get(contract.HeaderAuthenticated)).Inc()
		}
		if d.lane.slow {
			// The wait for the budget is not the handler's work: HandlerTimeout starts again.
			cancel()
			rctx, cancel = context.WithTimeout(ctx, v.cfg.HandlerTimeout)
			defer cancel()
		}
	}
	return v.verify(rctx, d, held{rec, rev})
}

// held is a job's record as read, and its revision; rev 0 when the job has no record.
type held struct {
	rec jobs.Record
	rev uint64
}

// errAuthPaused is the cause of a retry while verification is paused after a refused key.
var errAuthPaused = errors.New("verification paused: the upstream refused the API key")

// pause is a verifier-wide pause; the zero value is not paused. It is safe for concurrent use.
type pause struct{ until atomic.Int64 }

// start pauses until now+d, and reports whether this began a pause (none was running).
func (p *pause) start(now time.Time, d time.Duration) bool {
	prev := p.until.Swap(now.Add(d).UnixNano())
	return prev <= now.UnixNano()
}

// remaining is how long the pause still runs.
func (p *pause) remaining(now time.Time) time.Duration {
	return max(0, time.Duration(p.until.Load()-now.UnixNano()))
}

// errNotFound is the cause of a not_found dead letter.
var errNotFound = errors.New("the upstream does not know the job (404): spoofed or another account's")

// verify asks the upstream for the truth about a job and delivers it when it is terminal, carrying the
// record it holds through to the delivery's one write.
// The verdict carries the call's latency (wall clock, budget wait included) and its wait for budget, for
// the adaptive limit.
func (v *Verifier) verify(ctx context.Context, d delivery, h held) (vd verdict) {
	rec, rev := h.rec, h.rev
	t, err := v.truthOf(ctx, d, h)
	job := t.job
	defer func() { vd.call = t.call }()
	if span := trace.SpanFromContext(ctx); span.IsRecording() && err == nil {
		span.SetAttributes(attribute.String(attrSource, t.source))
	}
	now := v.cfg.Now().UTC()
	if err == nil && job.JobID != d.id {
		err = fmt.Errorf("upstream answered job %q for %q", job.JobID, d.id)
	}
	switch {
	case errors.Is(err, errAbsent):
		return deadLetter(ReasonNotFound, outcomeAbsent, err)
	case errors.Is(err, errStopping):
		return verdict{action: actGiveBack, outcome: outcomeShutdown}
	}
	if err != nil {
		if rev != 0 {
			v.noteFailure(ctx, d, h, err)
		}
		return v.judgeFailure(d, err)
	}
	v.metrics.authPaused.Set(0)
	if rev == 0 {
		if rec, rev, err = v.cfg.Deliverer.Ensure(ctx, job); errors.Is(err, jobs.ErrInHistory) {
			return ack(outcomeAlreadyDelivered) // delivered and compacted since decide looked
		} else if err != nil {
			return retryLater("create job record", err)
		}
	}
	note := attemptNote(&job, nil, d.receivedAt, now)
	if !job.Terminal() {
		if _, err := v.store.UpdateFrom(ctx, rec, rev, note); err != nil {
			return retryLater("record attempt", err)
		}
		d.log.Debug().Str("status", job.Status).Msg("job not terminal yet")
		return verdict{action: actRetry, outcome: outcomeNotTerminal, cause: fmt.Errorf("job is %s", job.Status)}
	}
	out, err := v.cfg.Deliverer.DeliverVerified(ctx, jobs.Verified{Job: job, Source: t.source, ReceivedAt: d.receivedAt,
		Record: rec, Rev: rev, Note: func(r *jobs.Record) { _, _ = note(r) }})
	switch {
	case err != nil:
		return retryLater("deliver", err)
	case out == jobs.Published:
		return verdict{action: actAck, outcome: outcomePublished, published: true}
	case out == jobs.PublishedLate:
		d.log.Info().Str("status", job.Status).Msg("verified late result published")
		return verdict{action: actAck, outcome: outcomeLate, published: true}
	}
	return ack(outcomeAlreadyDelivered)
}

// judgeFailure turns a failed GET /job/{id} into a verdict.
func (v *Verifier) judgeFailure(d delivery, err error) verdict {
	ue, isUpstream := errors.AsType[*upstream.Error](err)
	switch {
	case isUpstream && ue.Status == 404:
		v.notFound.Add(d.id)
		return deadLetter(ReasonNotFound, outcomeNotFound, errNotFound)
	case isUpstream && (ue.Status == 401 || ue.Status == 402 || ue.Status == 403):
		// The key is wrong (or the account unpaid) for every job, not this one: pause all verification,
		// as an outage does, and keep the webhook.
		if v.authPause.start(v.cfg.Now(), v.cfg.AuthPause) {
			v.metrics.authPaused.Set(1)
			d.log.Error().Err(err).Dur("pause", v.cfg.AuthPause).
				Msg("upstream refused the API key: verification paused for every webhook; fix BRIDGE_API_KEY or the account")
		}
		return verdict{action: actRetry, outcome: outcomeAuthPaused, retryAfter: v.cfg.AuthPause, cause: err}
	case isUpstream && !ue.Retryable():
		return deadLetter(ReasonUpstreamPrefix+strconv.Itoa(ue.Status), outcomeRejected, err)
	}
	return retryLater("get job", err)
}

// attemptNote records a GET /job attempt in a record: the answer (job) or the failure (callErr).
func attemptNote(job *upstream.Job, callErr error, receivedAt, now time.Time) func(*jobs.Record) (bool, error) {
	return func(r *jobs.Record) (bool, error) {
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
	}
}

// noteFailure records a failed attempt in the job's record; a failure to record it is only logged.
func (v *Verifier) noteFailure(ctx context.Context, d delivery, h held, callErr error) {
	note := attemptNote(nil, callErr, d.receivedAt, v.cfg.Now().UTC())
	if _, err := v.store.UpdateFrom(ctx, h.rec, h.rev, note); err != nil && !errors.Is(err, jobs.ErrNotFound) {
		d.log.Warn().Err(err).Msg("record failed attempt")
	}
}

// settle carries out a verdict: the one place that acks, naks or dead-letters a delivery. During a hard
// shutdown (ctx ended) a delivery that is not done is given back at once.
func (v *Verifier) settle(ctx context.Context, d delivery, vd verdict) {
	if vd.action == actRetry && ctx.Err() != nil {
		vd = verdict{action: actGiveBack, outcome: outcomeShutdown}
	}
	// The handler's ctx may be spent (HandlerTimeout): settling gets its own.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	switch vd.action {
	case actAck:
		if vd.published {
			v.metrics.latency.Observe(v.cfg.Now().Sub(d.receivedAt).Seconds())
		}
		// A plain ack: its loss only means a redelivery, which finds the result out and is acked then.
		if err := d.msg.Ack(); err != nil {
			d.log.Warn().Err(err).Msg("ack webhook; it will be redelivered and acked again")
		}
		v.metrics.count(vd.outcome)
	case actGiveBack:
		_ = d.msg.Nak()
		v.metrics.count(outcomeShutdown)
	case actDeadLetter:
		v.logDeadLetter(d, vd)
		v.deadLetter(sctx, d, vd.reason, vd.outcome)
	case actLane:
		d.log.Debug().Msg("unknown-job budget busy; webhook moved to the slow lane")
		v.moveOut(sctx, d, v.laneMsg(d), vd.outcome)
	case actRetry:
		// A refused key is no failure of the webhook: waiting it out spends no attempt towards exhaustion.
		if d.attempt >= v.cfg.MaxAttempts && vd.outcome != outcomeAuthPaused && vd.outcome != outcomeUnknownWaiting {
			d.log.Warn().Err(vd.cause).Msg("verification attempts exhausted; webhook dead-lettered, job left to the reconciler")
			v.deadLetter(sctx, d, ReasonAttemptsExhausted, outcomeExhausted)
			return
		}
		// A long upstream outage retries every pending webhook many times: warn on the first attempt and
		// every tenth, the rest at debug (the metrics count them all).
		ev := d.log.Debug()
		if vd.outcome == outcomeRetry && (d.attempt == 1 || d.attempt%10 == 0) {
			ev = d.log.Warn()
		}
		delay := v.backoff(d.attempt, vd.retryAfter)
		ev.Err(vd.cause).Dur("delay", delay).Msg("webhook verification deferred")
		if err := d.msg.NakWithDelay(delay); err != nil {
			d.log.Warn().Err(err).Msg("nak webhook; redelivered after AckWait")
		}
		v.metrics.count(vd.outcome)
	}
}

// logDeadLetter says why a webhook is dead-lettered, at the level its reason deserves.
func (v *Verifier) logDeadLetter(d delivery, vd verdict) {
	switch vd.reason {
	case ReasonMalformed:
		d.log.Warn().Err(vd.cause).Str("remote_addr", d.msg.Headers().Get(contract.HeaderRemoteAddr)).Msg("malformed webhook dead-lettered")
	case ReasonNotFound:
		d.log.Warn().Str("remote_addr", d.msg.Headers().Get(contract.HeaderRemoteAddr)).
			Str("modality", d.msg.Headers().Get(contract.HeaderModality)).
			Msg("webhook for a job the upstream does not know (spoofed or foreign); dead-lettered, not published")
	case ReasonUnknownJob:
		d.log.Info().Msg("webhook for a job the bridge does not know; unknown-job verification is off: dead-lettered")
	default:
		d.log.Error().Err(vd.cause).Str("reason", vd.reason).
			Msg("upstream refused verification; webhook dead-lettered, job left to the reconciler")
	}
}

// backoff is the delay before attempt+1: full jitter over RetryBase*2^(attempt-1) capped at RetryMax,
// at least RetryBase/4 (so an unlucky draw cannot spin) and at least retryAfter.
func (v *Verifier) backoff(attempt int, retryAfter time.Duration) time.Duration {
	ceil := retry.Exp(attempt, v.cfg.RetryBase, v.cfg.RetryMax)
	d := max(time.Duration(rand.Int64N(int64(ceil)+1)), v.cfg.RetryBase/4)
	return max(d, retryAfter)
}

// deadLetter stores the raw webhook in DEADLETTER on deadletter.<reason> and acks it (see moveOut); a
// dead letter from the slow lane keeps the webhook's original subject.
func (v *Verifier) deadLetter(ctx context.Context, d delivery, reason string, o outcome) {
	dl := webhookCopy(d, v.cfg.Names.DeadLetterSubject(reason), reason)
	dl.Header.Set(contract.HeaderReason, reason)
	if v.moveOut(ctx, d, dl, o) {
		v.metrics.deadLetters.WithLabelValues(reason).Inc()
	}
}

// laneMsg is the copy of d's webhook that waits in the slow lane, on slowlane.unknown_job in SLOWLANE; its
// Nats-Msg-Id has the format of a dead letter's, with unknown_job for the reason.
func (v *Verifier) laneMsg(d delivery) *nats.Msg {
	return webhookCopy(d, v.cfg.Names.SubjectUnknownLane, ReasonUnknownJob)
}

// webhookCopy is the message that carries d's webhook to subject: the raw body, the webhook's headers,
// Bridge-Attempts, Bridge-Original-Subject (the WEBHOOKS subject, kept from a slow-lane message) and a
// Nats-Msg-Id that names the message copied ([contract.DeadLetterMsgID] with why), so a redelivery of it
// collapses.
func webhookCopy(d delivery, subject, why string) *nats.Msg {
	msg := d.msg
	out := nats.NewMsg(subject)
	out.Data = msg.Data()
	contract.CopyWebhookHeaders(out.Header, msg.Headers())
	out.Header.Set(contract.HeaderAttempts, strconv.Itoa(d.attempt))
	orig := msg.Headers().Get(contract.HeaderOriginalSubject)
	if orig == "" {
		orig = msg.Subject()
	}
	out.Header.Set(contract.HeaderOriginalSubject, orig)
	if meta, err := msg.Metadata(); err == nil {
		out.Header.Set(jetstream.MsgIDHeader, contract.DeadLetterMsgID(d.id, why, meta.Stream, meta.Sequence.Stream))
	} else if d.id != "" {
		out.Header.Set(jetstream.MsgIDHeader, contract.DeadLetterMsgID(d.id, why, "", 0))
	}
	return out
}

// moveOut publishes out, d's webhook on its way to a dead letter or the slow lane, and then acks d. If the
// publish keeps failing the webhook is naked for a later attempt instead: it is never acked unstored. It
// reports whether out was stored.
func (v *Verifier) moveOut(ctx context.Context, d delivery, out *nats.Msg, o outcome) bool {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*settleTimeout)
	defer cancel()
	var err error
	for try := 0; try < 3; try++ {
		if _, err = natsx.PublishMsg(pctx, v.cfg.JS, out); err == nil {
			break
		}
		_ = retry.Sleep(pctx, time.Duration(try+1)*200*time.Millisecond)
	}
	if err != nil {
		d.log.Error().Err(err).Str("to", out.Subject).Msg("move webhook; it will be redelivered")
		if nerr := d.msg.NakWithDelay(v.backoff(d.attempt, 0)); nerr != nil {
			d.log.Warn().Err(nerr).Msg("nak webhook")
		}
		v.metrics.count(outcomeRetry)
		return false
	}
	v.metrics.count(o)
	// Wait for the server's confirmation: a redelivery of a moved webhook could cost an upstream call
	// again.
	if err := d.msg.DoubleAck(ctx); err != nil {
		d.log.Warn().Err(err).Msg("ack webhook; it will be redelivered and acked again")
	}
	return true
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
	canon, ok := jobs.CanonicalID(id)
	if !ok {
		return "", fmt.Errorf("%w: job_id %q is not a UUID", ErrMalformedWebhook, text.Truncate(id, 64))
	}
	return canon, nil
}
