package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/upstream"
)

// Outcome says what Deliver or TimeOut did.
type Outcome int

// Outcomes of a delivery.
const (
	// Published: this call put the job's result on results.<type>.
	Published Outcome = iota + 1
	// AlreadyDelivered: the job's result was out before; nothing was published.
	AlreadyDelivered
	// PublishedLate: the verified result of a timed-out job went to results.late.<type>.
	PublishedLate
	// StillPending: TimeOut found the pending job before its deadline; nothing was done.
	StillPending
)

func (o Outcome) String() string {
	switch o {
	case Published:
		return "published"
	case AlreadyDelivered:
		return "already_delivered"
	case PublishedLate:
		return "published_late"
	case StillPending:
		return "still_pending"
	}
	return "unknown"
}

// Failpoint names a point where a test may stop a process: the two points of a result's publish path
// where a paused or crashed deliverer is dangerous ([DelivererConfig.Failpoint]), and the two of a
// compaction round where a crashed compactor leaves it half done ([CompactorConfig.Failpoint]).
type Failpoint string

// Failpoints are every [Failpoint], in the order a job meets them.
func Failpoints() []Failpoint {
	return []Failpoint{BeforePublish, AfterPublish, CompactAfterHistory, CompactAfterRemove}
}

// Failpoints of the primary result's publish path (results.<type>, the verified or the timeout result).
const (
	// BeforePublish: the result is decided (the record read pending, the body built) and not yet published.
	BeforePublish Failpoint = "before-publish"
	// AfterPublish: the result is stored and its fence says so (claim, result, done); the JOBS record
	// is not yet written delivered.
	AfterPublish Failpoint = "after-publish"
)

// DelivererConfig configures a Deliverer.
type DelivererConfig struct {
	JS        jetstream.JetStream
	Store     *Store
	Deadlines Deadlines
	Log       zerolog.Logger
	Now       func() time.Time
	// Failpoint is for tests only (the crash suite, through the binary's BRIDGE_TEST_FAILPOINT): when set,
	// it is called with the job's id at each [Failpoint] of the primary result's publish path, and may
	// block there. Nil in production: the cost is a nil check.
	Failpoint func(point Failpoint, id string)
	// History is the history of delivered jobs (a *history.Store), whose records and fences were
	// compacted away; nil: no history, and a job without a JOBS record is a new one. See [Deliverer].
	History History
	// Names are the bridge's names (its namespace's): result subjects, RESULTS and its fences. The zero
	// Names means contract.Default.
	Names contract.Names
}

// History answers whether a job's id is in the history of delivered jobs. *history.Store satisfies it.
type History interface {
	// Delivered reports whether jobID is in the history. On an error the answer is unknown.
	Delivered(ctx context.Context, jobID string) (bool, error)
}

// Deliverer publishes results through the one path that keeps them single. Safe for concurrent use.
//
// With a [History], a job is out when its JOBS record says so or, having no record, when its id is in
// the history: the compactor adds an id to the history before it deletes the record and purges the
// fence, so reading the record first and the history second never misses a delivered job. A job in
// the history is AlreadyDelivered, and nothing is published for it. Every claim on a fence is followed
// by a history lookup before the result: a deliverer that read a pending record, paused while the job
// was delivered elsewhere and compacted, and then claimed the emptied fence, finds the id and stores
// nothing (one paused after its claim is refused by the fence, which the purge emptied).
type Deliverer struct {
	js        jetstream.JetStream
	store     *Store
	deadlines Deadlines
	log       zerolog.Logger
	now       func() time.Time
	// beforePublish, when set (tests), runs before every result publish: a place to pause a deliverer.
	beforePublish func(id string)
	// failpoint is DelivererConfig.Failpoint.
	failpoint func(point Failpoint, id string)
	// once publishes every result through its fence (claim, result, done).
	once *OncePublisher
	// history is DelivererConfig.History, or nil.
	history History
	names   contract.Names
}

// NewDeliverer returns a Deliverer; JS and Store are required.
func NewDeliverer(cfg DelivererConfig) (*Deliverer, error) {
	if cfg.JS == nil || cfg.Store == nil {
		return nil, errors.New("jobs: deliverer needs JS and Store")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Deadlines.ByModality == nil {
		cfg.Deadlines = DefaultDeadlines()
	}
	d := &Deliverer{js: cfg.JS, store: cfg.Store, deadlines: cfg.Deadlines, log: cfg.Log, now: cfg.Now,
		failpoint: cfg.Failpoint, once: NewOncePublisher(cfg.JS, cfg.Names), history: cfg.History, names: cfg.Names.OrDefault()}
	if d.history != nil {
		d.once.WithCheck(d.checkClaim)
	}
	return d, nil
}

// InHistory reports whether jobID is in the history of delivered jobs (false without a History). Call
// it only for a job whose JOBS record was found missing, after that read: see [Deliverer].
func (d *Deliverer) InHistory(ctx context.Context, jobID string) (bool, error) {
	if d.history == nil {
		return false, nil
	}
	return d.history.Delivered(ctx, jobID)
}

// checkClaim is the OncePublisher's [ClaimCheck]: once a claim holds the fence, a job in the history is
// out (its fence was purged by the compaction), and its result must not be stored.
func (d *Deliverer) checkClaim(ctx context.Context, fence string) error {
	return d.notInHistory(ctx, strings.TrimSuffix(strings.TrimPrefix(fence, d.names.SubjectResultFence), contract.LateSuffix))
}

// Store is the JOBS store the deliverer writes.
func (d *Deliverer) Store() *Store { return d.store }

// Ensure returns the record of job and its revision, creating one (origin webhook, with ctx's trace
// context) when the job was submitted elsewhere. A job without a record whose id is in the history gets
// none: ErrInHistory.
func (d *Deliverer) Ensure(ctx context.Context, job upstream.Job) (Record, uint64, error) {
	rec, rev, err := d.store.Get(ctx, job.JobID)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return rec, rev, err
	}
	if err := d.notInHistory(ctx, job.JobID); err != nil {
		return Record{}, 0, err
	}
	rec = d.pendingRecord(job, OriginWebhook)
	rec.SetTrace(contract.TraceOf(ctx))
	rev, err = d.store.Create(ctx, rec)
	if errors.Is(err, ErrExists) {
		// Someone else created it first: theirs is the record.
		rec, rev, err = d.store.Get(ctx, job.JobID)
	}
	if err != nil {
		return Record{}, 0, err
	}
	return rec, rev, nil
}

// Adopt gives a job of the account that the bridge has no record of a pending record (origin adopted),
// with the deadline of its type counted from its created_at, so it is tracked like a job submitted
// through the bridge. It reports whether it created the record (false: one existed, or the id is in the
// history).
func (d *Deliverer) Adopt(ctx context.Context, job upstream.Job) (bool, error) {
	if d.history != nil {
		// The record first, then the history (see [Deliverer]).
		if _, _, err := d.store.Get(ctx, job.JobID); !errors.Is(err, ErrNotFound) {
			return false, err
		}
		if err := d.notInHistory(ctx, job.JobID); err != nil {
			return false, ignoreInHistory(err)
		}
	}
	_, err := d.store.Create(ctx, d.pendingRecord(job, OriginAdopted))
	if errors.Is(err, ErrExists) {
		return false, nil
	}
	return err == nil, err
}

// notInHistory returns ErrInHistory when jobID is in the history, nil when it is not (or there is
// none). The caller read the job's record missing first.
func (d *Deliverer) notInHistory(ctx context.Context, jobID string) error {
	out, err := d.InHistory(ctx, jobID)
	switch {
	case err != nil:
		return err
	case out:
		return ErrInHistory
	}
	return nil
}

// ignoreInHistory is err, or nil when it is ErrInHistory.
func ignoreInHistory(err error) error {
	if errors.Is(err, ErrInHistory) {
		return nil
	}
	return err
}

// pendingRecord is the new pending record of a job the bridge did not submit, with the deadline of its type
// counted from its created_at (from now when that is missing or ahead).
func (d *Deliverer) pendingRecord(job upstream.Job, origin string) Record {
	start := d.now().UTC()
	if created := createdAt(job.Raw); !created.IsZero() && created.Before(start) {
		start = created
	}
	return Record{JobID: job.JobID, Modality: job.Type, State: StatePending, Origin: origin,
		SubmittedAt: start, Deadline: start.Add(d.deadlines.For(job.Type))}
}

// Verified is a verified, terminal answer to deliver, and what the caller knows of the job already.
type Verified struct {
	// Job is the upstream's answer.
	Job upstream.Job
	// Source is contract.SourceWebhook or contract.SourcePoll; ReceivedAt is when the bridge learned the job finished.
	Source     string
	ReceivedAt time.Time
	// Record and Rev are the job's record as the caller read it; Rev 0 means not read (Deliver reads or
	// creates it). With them, the delivery costs no read of its own.
	Record Record
	Rev    uint64
	// Note, when set, is applied to the record in the same write that records the delivery (the
	// verifier's attempt count), so recording it costs no write of its own.
	Note func(*Record)
}

// Deliver publishes the upstream's verified, terminal answer for a job once: on results.<type> when the
// job is pending, on results.late.<type> when the bridge timed it out before, and not at all when its
// result was out already. source is contract.SourceWebhook or contract.SourcePoll; receivedAt is when the bridge
// learned the job finished.
func (d *Deliverer) Deliver(ctx context.Context, job upstream.Job, source string, receivedAt time.Time) (Outcome, error) {
	return d.DeliverVerified(ctx, Verified{Job: job, Source: source, ReceivedAt: receivedAt})
}

// DeliverVerified is Deliver with what the caller knows: the record it read (no read again) and a note
// to write with the delivery. On the way that publishes, it costs one publish and one record write.
func (d *Deliverer) DeliverVerified(ctx context.Context, v Verified) (Outcome, error) {
	job := v.Job
	if !job.Terminal() {
		return 0, fmt.Errorf("%w: %s is %s", ErrNotTerminal, job.JobID, job.Status)
	}
	if v.Rev == 0 {
		var err error
		if v.Record, v.Rev, err = d.Ensure(ctx, job); err != nil {
			return alreadyIfInHistory(err)
		}
	}
	rec := v.Record
	switch rec.State {
	case StateDelivered:
		return AlreadyDelivered, nil
	case StateTimedOut:
		return d.deliverLate(ctx, v, rec)
	}
	now := d.now().UTC()
	body, err := resultBody(job.Raw, rec.Modality, nil, Meta{Source: v.Source, ReceivedAt: v.ReceivedAt, VerifiedAt: &now})
	if err != nil {
		return 0, fmt.Errorf("result %s: %w", job.JobID, err)
	}
	rec, published, err := d.publishPrimary(ctx, v, resultType(job.Type, rec.Modality), body)
	if err != nil {
		return alreadyIfInHistory(err)
	}
	if rec.State == StateTimedOut {
		// A timeout result won the race for results.<type>: this verified one is the late result.
		return d.deliverLate(ctx, v, rec)
	}
	if published {
		return Published, nil
	}
	return AlreadyDelivered, nil
}

// TimeOut publishes the timeout result of a pending job whose deadline has passed: last is the
// upstream's last answer (nil when there was none). Without publishing, it returns AlreadyDelivered when
// the record is no longer pending and StillPending when its deadline is still ahead.
func (d *Deliverer) TimeOut(ctx context.Context, id string, last *upstream.Job) (Outcome, error) {
	rec, rev, err := d.store.Get(ctx, id)
	if err != nil {
		return 0, err
	}
	if rec.State != StatePending {
		return AlreadyDelivered, nil
	}
	now := d.now().UTC()
	if now.Before(rec.Deadline) {
		return StillPending, nil
	}
	base, typ := timeoutBase(rec, last)
	body, err := resultBody(base, rec.Modality, timeoutOverrides, Meta{Source: contract.SourceTimeout, ReceivedAt: now})
	if err != nil {
		return 0, fmt.Errorf("timeout result %s: %w", id, err)
	}
	_, published, err := d.publishPrimary(ctx, Verified{Source: contract.SourceTimeout, Record: rec, Rev: rev}, typ, body)
	if err != nil {
		return alreadyIfInHistory(err)
	}
	if published {
		return Published, nil
	}
	return AlreadyDelivered, nil
}

// publishPrimary publishes body on results.<typ> (Nats-Msg-Id = job_id) once for ever, fenced by
// bridge.result.<job_id>, then records in JOBS, with v.Note, which publish is the one in the stream: ours,
// or, when the fence was there already, the one it names. It returns the record as stored afterwards.
func (d *Deliverer) publishPrimary(ctx context.Context, v Verified, typ string, body []byte) (Record, bool, error) {
	id := v.Record.JobID
	subject := d.names.ResultSubject(typ)
	if d.failpoint != nil {
		d.failpoint(BeforePublish, id)
	}
	seq, winner, published, err := d.publishOnce(ctx, result{jobID: id, subject: subject, source: v.Source, body: body,
		trace: v.Record.Trace()})
	if err != nil {
		return Record{}, false, err
	}
	if d.failpoint != nil && published {
		d.failpoint(AfterPublish, id)
	}
	now := d.now().UTC()
	rec, err := d.store.UpdateFrom(ctx, v.Record, v.Rev, func(r *Record) (bool, error) {
		if r.State != StatePending {
			return false, nil // someone recorded the winner already
		}
		if v.Note != nil {
			v.Note(r)
		}
		r.State = StateDelivered
		if winner == contract.SourceTimeout {
			r.State = StateTimedOut
		}
		r.Source, r.ResultSubject, r.ResultSeq, r.DeliveredAt = winner, subject, seq, &now
		r.compact()
		return true, nil
	})
	if err != nil {
		return Record{}, false, err
	}
	return rec, published, nil
}

// deliverLate publishes v, the verified answer for the timed-out job of rec, as its late result once.
func (d *Deliverer) deliverLate(ctx context.Context, v Verified, rec Record) (Outcome, error) {
	if rec.LateDeliveredAt != nil {
		return AlreadyDelivered, nil
	}
	now := d.now().UTC()
	body, err := resultBody(v.Job.Raw, rec.Modality, nil, Meta{Source: v.Source, ReceivedAt: v.ReceivedAt, VerifiedAt: &now})
	if err != nil {
		return 0, fmt.Errorf("late result %s: %w", v.Job.JobID, err)
	}
	seq, _, published, err := d.publishOnce(ctx, result{jobID: rec.JobID, late: true,
		subject: d.names.LateResultSubject(resultType(v.Job.Type, rec.Modality)), source: v.Source, body: body,
		trace: rec.Trace()})
	if err != nil {
		return alreadyIfInHistory(err)
	}
	if _, err := d.store.Update(ctx, rec.JobID, func(r *Record) (bool, error) {
		if r.LateDeliveredAt != nil {
			return false, nil
		}
		r.LateSeq, r.LateDeliveredAt = seq, &now
		return true, nil
	}); err != nil {
		return 0, err
	}
	if !published {
		return AlreadyDelivered, nil
	}
	return PublishedLate, nil
}

// result is a result to publish: the job's, or with late its late result, on subject, from source.
type result struct {
	jobID   string
	late    bool
	subject string
	source  string
	body    []byte
	// trace is the job record's trace context, for a result whose ctx carries none.
	trace contract.Trace
}

// publishOnce publishes r through its fence (see [OncePublisher]). When the fence names a result
// already, that one is out: it returns its sequence and source, published false. The result carries the
// trace context of ctx (the verification's span), else the record's.
func (d *Deliverer) publishOnce(ctx context.Context, r result) (seq uint64, winner string, published bool, err error) {
	if d.beforePublish != nil {
		d.beforePublish(r.jobID)
	}
	msgID := contract.ResultMsgID(r.jobID, r.late)
	msg := nats.NewMsg(r.subject)
	msg.Data = r.body
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	msg.Header.Set(contract.HeaderBridgeSource, r.source)
	if t := contract.TraceOf(ctx); t.Parent != "" {
		r.trace = t
	}
	if r.trace.Parent != "" {
		msg.Header.Set(contract.HeaderTraceParent, r.trace.Parent)
		if r.trace.State != "" {
			msg.Header.Set(contract.HeaderTraceState, r.trace.State)
		}
	}
	seq, err = d.once.Publish(ctx, d.names.ResultFenceSubject(r.jobID, r.late), msg)
	if err == nil {
		return seq, r.source, true, nil
	}
	if out, ok := errors.AsType[*AlreadyPublishedError](err); ok {
		return out.Seq, out.Source, false, nil
	}
	if errors.Is(err, ErrInHistory) {
		return 0, "", false, err
	}
	return 0, "", false, fmt.Errorf("publish result %s: %w", msgID, err)
}

// alreadyIfInHistory turns ErrInHistory into AlreadyDelivered; any other error stays one.
func alreadyIfInHistory(err error) (Outcome, error) {
	if errors.Is(err, ErrInHistory) {
		return AlreadyDelivered, nil
	}
	return 0, err
}

// resultType is the <type> of a result's subject: the record's modality, which is the submit endpoint
// the caller used, so that a moderate.prompt job stays on results.prompt when the v2 upstream calls it a
// "text" job; the upstream's type only for a record without one.
func resultType(jobType, modality string) string {
	if modality != "" {
		return modality
	}
	return jobType
}

// createdAt reads created_at from a job object, or zero.
func createdAt(raw json.RawMessage) time.Time {
	var v struct {
		CreatedAt time.Time `json:"created_at"`
	}
	_ = json.Unmarshal(raw, &v)
	return v.CreatedAt
}
