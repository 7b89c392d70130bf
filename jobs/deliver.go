package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bjs "github.com/evershield/bridge/jetstream"
	"github.com/evershield/bridge/upstream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
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

// DelivererConfig configures a Deliverer.
type DelivererConfig struct {
	JS        jetstream.JetStream
	Store     *Store
	Deadlines Deadlines
	Log       zerolog.Logger
	Now       func() time.Time
}

// Deliverer publishes results through the one path that keeps them single. Safe for concurrent use.
type Deliverer struct {
	js        jetstream.JetStream
	store     *Store
	deadlines Deadlines
	log       zerolog.Logger
	now       func() time.Time
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
	return &Deliverer{js: cfg.JS, store: cfg.Store, deadlines: cfg.Deadlines, log: cfg.Log, now: cfg.Now}, nil
}

// Store is the JOBS store the deliverer writes.
func (d *Deliverer) Store() *Store { return d.store }

// Ensure returns the record of job, creating one (origin webhook) when the job was submitted elsewhere.
func (d *Deliverer) Ensure(ctx context.Context, job upstream.Job) (Record, error) {
	rec, _, err := d.store.Get(ctx, job.JobID)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return rec, err
	}
	start := d.now().UTC()
	if created := createdAt(job.Raw); !created.IsZero() && created.Before(start) {
		start = created
	}
	rec = Record{
		JobID: job.JobID, Modality: job.Type, State: StatePending, Origin: OriginWebhook,
		SubmittedAt: start, Deadline: start.Add(d.deadlines.For(job.Type)),
	}
	_, err = d.store.Create(ctx, rec)
	if errors.Is(err, ErrExists) {
		// Someone else created it first: theirs is the record.
		rec, _, err = d.store.Get(ctx, job.JobID)
	}
	if err != nil {
		return Record{}, err
	}
	return rec, nil
}

// Deliver publishes the upstream's verified, terminal answer for a job once: on results.<type> when the
// job is pending, on results.late.<type> when the bridge timed it out before, and not at all when its
// result was out already. source is bjs.SourceWebhook or bjs.SourcePoll; receivedAt is when the bridge
// learned the job finished.
func (d *Deliverer) Deliver(ctx context.Context, job upstream.Job, source string, receivedAt time.Time) (Outcome, error) {
	if !job.Terminal() {
		return 0, fmt.Errorf("%w: %s is %s", ErrNotTerminal, job.JobID, job.Status)
	}
	rec, err := d.Ensure(ctx, job)
	if err != nil {
		return 0, err
	}
	switch rec.State {
	case StateDelivered:
		return AlreadyDelivered, nil
	case StateTimedOut:
		return d.deliverLate(ctx, job, rec, source, receivedAt)
	}
	now := d.now().UTC()
	body, err := resultBody(job.Raw, rec.Modality, nil, source, receivedAt, &now)
	if err != nil {
		return 0, fmt.Errorf("result %s: %w", job.JobID, err)
	}
	rec, published, err := d.publishPrimary(ctx, rec, resultType(job.Type, rec.Modality), body, source)
	if err != nil {
		return 0, err
	}
	if rec.State == StateTimedOut {
		// A timeout result won the race for results.<type>: this verified one is the late result.
		return d.deliverLate(ctx, job, rec, source, receivedAt)
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
	rec, _, err := d.store.Get(ctx, id)
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
	body, err := resultBody(base, rec.Modality, timeoutOverrides, bjs.SourceTimeout, now, nil)
	if err != nil {
		return 0, fmt.Errorf("timeout result %s: %w", id, err)
	}
	_, published, err := d.publishPrimary(ctx, rec, typ, body, bjs.SourceTimeout)
	if err != nil {
		return 0, err
	}
	if published {
		return Published, nil
	}
	return AlreadyDelivered, nil
}

// publishPrimary publishes body on results.<typ> with Nats-Msg-Id = job_id, then records in JOBS which
// publish is the one in the stream: ours, or (on a duplicate acknowledgement) the one read back by
// sequence. It returns the record as stored afterwards.
func (d *Deliverer) publishPrimary(ctx context.Context, rec Record, typ string, body []byte, source string) (Record, bool, error) {
	subject := bjs.ResultSubject(typ)
	ack, err := d.publish(ctx, subject, rec.JobID, source, body)
	if err != nil {
		return Record{}, false, err
	}
	winner := source
	if ack.Duplicate {
		if winner, err = d.sourceOf(ctx, ack.Sequence); err != nil {
			return Record{}, false, err
		}
	}
	now := d.now().UTC()
	rec, err = d.store.Update(ctx, rec.JobID, func(r *Record) (bool, error) {
		if r.State != StatePending {
			return false, nil // someone recorded the winner already
		}
		r.State = StateDelivered
		if winner == bjs.SourceTimeout {
			r.State = StateTimedOut
		}
		r.Source, r.ResultSubject, r.ResultSeq, r.DeliveredAt = winner, subject, ack.Sequence, &now
		return true, nil
	})
	if err != nil {
		return Record{}, false, err
	}
	return rec, !ack.Duplicate, nil
}

func (d *Deliverer) deliverLate(ctx context.Context, job upstream.Job, rec Record, source string, receivedAt time.Time) (Outcome, error) {
	if rec.LateDeliveredAt != nil {
		return AlreadyDelivered, nil
	}
	now := d.now().UTC()
	body, err := resultBody(job.Raw, rec.Modality, nil, source, receivedAt, &now)
	if err != nil {
		return 0, fmt.Errorf("late result %s: %w", job.JobID, err)
	}
	ack, err := d.publish(ctx, bjs.LateResultSubject(resultType(job.Type, rec.Modality)), rec.JobID+bjs.LateSuffix, source, body)
	if err != nil {
		return 0, err
	}
	if _, err := d.store.Update(ctx, rec.JobID, func(r *Record) (bool, error) {
		if r.LateDeliveredAt != nil {
			return false, nil
		}
		r.LateSeq, r.LateDeliveredAt = ack.Sequence, &now
		return true, nil
	}); err != nil {
		return 0, err
	}
	if ack.Duplicate {
		return AlreadyDelivered, nil
	}
	return PublishedLate, nil
}

func (d *Deliverer) publish(ctx context.Context, subject, msgID, source string, body []byte) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(subject)
	msg.Data = body
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	msg.Header.Set(bjs.HeaderBridgeSource, source)
	ack, err := bjs.PublishMsg(ctx, d.js, msg)
	if err != nil {
		return nil, fmt.Errorf("publish result %s: %w", msgID, err)
	}
	return ack, nil
}

// sourceOf reads the Bridge-Source of the RESULTS message at seq: the publish that won.
func (d *Deliverer) sourceOf(ctx context.Context, seq uint64) (string, error) {
	s, err := d.js.Stream(ctx, bjs.StreamResults)
	if err != nil {
		return "", fmt.Errorf("results stream: %w", err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return "", fmt.Errorf("read result seq %d: %w", seq, err)
	}
	return m.Header.Get(bjs.HeaderBridgeSource), nil
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
