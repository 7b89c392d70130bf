package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/jobs"
)

// DeadLetter is one message of DEADLETTER.
type DeadLetter struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Subject is deadletter.<reason>; Reason and Attempts come from the Bridge-Reason and
	// Bridge-Attempts headers.
	Subject  string `json:"subject"`
	Reason   string `json:"reason"`
	Attempts int    `json:"attempts"`
	// JobID is the webhook body's job_id, empty for a malformed webhook.
	JobID string `json:"job_id,omitempty"`
	// OriginalSubject is the WEBHOOKS subject the webhook was verified from.
	OriginalSubject string              `json:"original_subject,omitempty"`
	Headers         map[string][]string `json:"headers,omitempty"`
	Body            json.RawMessage     `json:"body"`
	// JobState is the job's state in JOBS (pending, delivered, timed_out, or timed_out+late once a
	// timed-out job's late result is out), or "" when JOBS has no record.
	JobState string `json:"job_state,omitempty"`
	// resultOut is [jobs.Record.ResultOut] of the job's record.
	resultOut bool
}

// DeadLetterFilter selects dead letters; every set criterion must hold.
type DeadLetterFilter struct {
	// Names are the bridge's names (its namespace's): DEADLETTER, its subjects and JOBS. The zero Names
	// means contract.Default.
	Names contract.Names
	// Seqs are exact sequences; with Seqs set the other criteria still apply.
	Seqs []uint64
	// Reasons keep dead letters with one of these reasons (the last subject token).
	Reasons []string
	// JobIDs keep dead letters of these jobs.
	JobIDs []string
	// FromSeq and Since bound where reading starts.
	FromSeq uint64
	Since   time.Time
	// Limit caps how many are returned (zero: 1000).
	Limit int
}

func (f DeadLetterFilter) match(d DeadLetter) bool {
	if len(f.Reasons) > 0 && !slices.Contains(f.Reasons, d.Reason) {
		return false
	}
	if len(f.JobIDs) > 0 && !slices.ContainsFunc(f.JobIDs, func(id string) bool { return strings.EqualFold(id, d.JobID) }) {
		return false
	}
	if !f.Since.IsZero() && d.Time.Before(f.Since) {
		return false
	}
	return f.FromSeq == 0 || d.Seq >= f.FromSeq
}

// DeadLetterSummary counts what DEADLETTER holds.
type DeadLetterSummary struct {
	Total    uint64            `json:"total"`
	ByReason map[string]uint64 `json:"by_reason"`
	// FirstTime and LastTime are the times of the oldest and newest kept dead letters.
	FirstTime time.Time `json:"first_time,omitzero"`
	LastTime  time.Time `json:"last_time,omitzero"`
}

// SummarizeDeadLetters counts the dead letters of the bridge of names by reason from the stream's subject
// counts.
func SummarizeDeadLetters(ctx context.Context, js jetstream.JetStream, names contract.Names) (DeadLetterSummary, error) {
	n := names.OrDefault()
	s, err := js.Stream(ctx, n.StreamDeadLetter)
	if err != nil {
		return DeadLetterSummary{}, fmt.Errorf("stream %s: %w", n.StreamDeadLetter, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(n.SubjectDeadLetter+">"))
	if err != nil {
		return DeadLetterSummary{}, fmt.Errorf("stream %s: %w", n.StreamDeadLetter, err)
	}
	sum := DeadLetterSummary{Total: info.State.Msgs, ByReason: map[string]uint64{}}
	if info.State.Msgs > 0 {
		sum.FirstTime, sum.LastTime = info.State.FirstTime, info.State.LastTime
	}
	for subj, count := range info.State.Subjects {
		sum.ByReason[strings.TrimPrefix(subj, n.SubjectDeadLetter)] += count
	}
	return sum, nil
}

// ListDeadLetters returns the dead letters f selects, oldest first, each with its job's JOBS state.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, f DeadLetterFilter) ([]DeadLetter, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	f.Names = f.Names.OrDefault()
	s, err := js.Stream(ctx, f.Names.StreamDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", f.Names.StreamDeadLetter, err)
	}
	var out []DeadLetter
	if len(f.Seqs) > 0 {
		for _, seq := range f.Seqs {
			d, err := getDeadLetter(ctx, s, f.Names, seq)
			if err != nil {
				return nil, err
			}
			if f.match(d) {
				out = append(out, d)
			}
			if len(out) >= f.Limit {
				break
			}
		}
	} else if out, err = scanDeadLetters(ctx, js, s, f); err != nil {
		return nil, err
	}
	if err := addJobStates(ctx, js, f.Names.BucketJobs, out); err != nil {
		return nil, err
	}
	return out, nil
}

func getDeadLetter(ctx context.Context, s jetstream.Stream, names contract.Names, seq uint64) (DeadLetter, error) {
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("%w: no dead letter at seq %d", ErrNotFound, seq)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return decodeDeadLetter(names, m), nil
}

// decodeDeadLetter reads a stored dead letter of the bridge of names.
func decodeDeadLetter(names contract.Names, m *jetstream.RawStreamMsg) DeadLetter {
	h := m.Header
	d := DeadLetter{Seq: m.Sequence, Time: m.Time.UTC(), Subject: m.Subject, Reason: h.Get(contract.HeaderReason),
		OriginalSubject: h.Get(contract.HeaderOriginalSubject), Headers: h, Body: json.RawMessage(m.Data)}
	if d.Reason == "" {
		d.Reason = strings.TrimPrefix(m.Subject, names.SubjectDeadLetter)
	}
	d.Attempts, _ = strconv.Atoi(h.Get(contract.HeaderAttempts))
	d.JobID = jobIDOf(m.Data, "")
	if !json.Valid(m.Data) {
		d.Body, _ = json.Marshal(string(m.Data)) // keep it printable as JSON
	}
	return d
}

// scanDeadLetters reads DEADLETTER from the filter's start with an ordered consumer.
func scanDeadLetters(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, f DeadLetterFilter) ([]DeadLetter, error) {
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", f.Names.StreamDeadLetter, err)
	}
	if info.State.Msgs == 0 || info.State.LastSeq < f.FromSeq {
		return nil, nil
	}
	end := info.State.LastSeq
	occ := jetstream.OrderedConsumerConfig{InactiveThreshold: time.Minute}
	for _, r := range f.Reasons {
		occ.FilterSubjects = append(occ.FilterSubjects, f.Names.DeadLetterSubject(r))
	}
	switch {
	case f.FromSeq > 0:
		occ.DeliverPolicy, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.FromSeq
	case !f.Since.IsZero():
		since := f.Since
		occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := js.OrderedConsumer(ctx, f.Names.StreamDeadLetter, occ)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Names.StreamDeadLetter, err)
	}
	var out []DeadLetter
	for unheard := 0; len(out) < f.Limit; {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f.Names.StreamDeadLetter, err)
		}
		n, last := 0, false
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			if meta.Sequence.Stream > end {
				last = true
				continue
			}
			d := decodeDeadLetter(f.Names, &jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: meta.Sequence.Stream,
				Header: m.Headers(), Data: m.Data(), Time: meta.Timestamp})
			if f.match(d) && len(out) < f.Limit {
				out = append(out, d)
			}
			last = last || meta.NumPending == 0 || meta.Sequence.Stream == end
		}
		err = batch.Error()
		if errors.Is(err, nats.ErrNoResponders) && n == 0 && unheard < maxUnheard {
			unheard++ // the new consumer's interest has not reached our server yet
			if err := retry.Sleep(ctx, time.Duration(unheard)*unheardWait); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read %s: %w", f.Names.StreamDeadLetter, err)
		}
		if last || n == 0 {
			break
		}
	}
	return out, nil
}

// addJobStates fills JobState from the JOBS bucket called bucket.
func addJobStates(ctx context.Context, js jetstream.JetStream, bucket string, dls []DeadLetter) error {
	if len(dls) == 0 {
		return nil
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	store := jobs.NewStore(kv)
	for i := range dls {
		if dls[i].JobID == "" {
			continue
		}
		rec, _, err := store.Get(ctx, dls[i].JobID)
		if errors.Is(err, jobs.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		dls[i].JobState, dls[i].resultOut = jobStateLabel(rec), rec.ResultOut()
	}
	return nil
}

// jobStateLabel is the JOBS state shown for a dead letter's job: its state, marked +late for a timed-out
// job whose late result is out too.
func jobStateLabel(rec jobs.Record) string {
	if rec.State == jobs.StateTimedOut && rec.ResultOut() {
		return string(rec.State) + "+late"
	}
	return string(rec.State)
}

// RedriveConfig configures [Redrive]. JS is required, and Filter must select something.
type RedriveConfig struct {
	JS  jetstream.JetStream
	Log zerolog.Logger
	// Filter selects the dead letters to redrive.
	Filter DeadLetterFilter
	// DryRun decides and reports without publishing or deleting.
	DryRun bool
	// Force redrives also dead letters whose job's result is out already (the verifier will acknowledge
	// them without an upstream call).
	Force bool
	// Delete removes from DEADLETTER each dead letter whose job's result is out, and each one redriven
	// that is older than DEADLETTER's duplicate window (a younger one stays: see [Redrive]).
	Delete bool
	// Rate caps redrives per second; zero is unlimited.
	Rate float64
}

// RedriveItem is what Redrive did with one dead letter.
type RedriveItem struct {
	Seq    uint64 `json:"seq"`
	JobID  string `json:"job_id,omitempty"`
	Reason string `json:"reason"`
	// Action is redriven, duplicate (redriven before, within WEBHOOKS' duplicate window), skipped.
	Action string `json:"action"`
	// Why explains a skip.
	Why     string `json:"why,omitempty"`
	Subject string `json:"subject,omitempty"`
	MsgID   string `json:"msg_id,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}

// Redrive actions.
const (
	ActionRedriven  = "redriven"
	ActionDuplicate = "duplicate"
	ActionSkipped   = "skipped"
	ActionWould     = "would_redrive"
)

// Redrive republishes the selected dead letters into WEBHOOKS for the running verifier: on the webhook's
// original subject, with its original ingest headers, and Nats-Msg-Id <job_id>.redrive.<dead letter seq>
// (the original id, the job id, is inside WEBHOOKS' duplicate window for a while and would be dropped).
// The same dead letter redriven twice is dropped by the duplicate window; a dead letter that fails
// again is dead-lettered anew, under a new sequence, and can be redriven again. Whatever is redriven, the
// verifier skips a job whose JOBS record shows its result out, so a result is never published twice.
//
// The verifier dead-letters under <job_id>.<reason>.<stream>.<seq>, naming the message it failed on, so a
// redriven copy (a new WEBHOOKS message) that fails again is stored again, and Delete may drop the old one.
//
// Skipped without Force: malformed webhooks (no job id: they would only fail again) and jobs whose
// result is out.
func Redrive(ctx context.Context, cfg RedriveConfig) ([]RedriveItem, error) {
	if cfg.JS == nil {
		return nil, fmt.Errorf("%w: redrive: JS required", ErrInvalid)
	}
	cfg.Filter.Names = cfg.Filter.Names.OrDefault()
	n := cfg.Filter.Names
	dls, err := ListDeadLetters(ctx, cfg.JS, cfg.Filter)
	if err != nil {
		return nil, err
	}
	log := cfg.Log.With().Str("component", "redrive").Logger()
	var stream jetstream.Stream
	if cfg.Delete && !cfg.DryRun {
		if stream, err = cfg.JS.Stream(ctx, n.StreamDeadLetter); err != nil {
			return nil, fmt.Errorf("stream %s: %w", n.StreamDeadLetter, err)
		}
	}
	pacer := newPacer(cfg.Rate)
	items := make([]RedriveItem, 0, len(dls))
	for _, d := range dls {
		it := RedriveItem{Seq: d.Seq, JobID: d.JobID, Reason: d.Reason}
		switch {
		case d.JobID == "":
			it.Action, it.Why = ActionSkipped, "malformed: the webhook has no valid job_id and cannot be verified"
		case d.resultOut && !cfg.Force:
			it.Action, it.Why = ActionSkipped, "the job's result is out already (JOBS state "+d.JobState+")"
		default:
			it.Subject = d.OriginalSubject
			if !strings.HasPrefix(it.Subject, n.SubjectWebhooks) {
				it.Subject = n.WebhookSubject(nats.Header(d.Headers).Get(contract.HeaderModality))
			}
			it.MsgID = contract.RedriveMsgID(d.JobID, d.Seq)
			it.Action = ActionWould
		}
		if it.Action == ActionWould && !cfg.DryRun {
			if err := pace(ctx, pacer); err != nil {
				return items, err
			}
			m := nats.NewMsg(it.Subject)
			m.Data = []byte(d.Body)
			contract.CopyWebhookHeaders(m.Header, d.Headers)
			m.Header.Set(contract.HeaderReplay, contract.ReplayRedrive)
			m.Header.Set(contract.HeaderOriginalSeq, strconv.FormatUint(d.Seq, 10))
			m.Header.Set(jetstream.MsgIDHeader, it.MsgID)
			dup, err := publishJS(ctx, cfg.JS, m)
			if err != nil {
				return items, fmt.Errorf("redrive dead letter %d: %w", d.Seq, err)
			}
			it.Action = ActionRedriven
			if dup {
				it.Action = ActionDuplicate
			}
			log.Info().Uint64("seq", d.Seq).Str("job_id", d.JobID).Str("reason", d.Reason).Str("action", it.Action).Msg("dead letter redriven")
		}
		if cfg.Delete && !cfg.DryRun {
			if redriven := it.Action == ActionRedriven || it.Action == ActionDuplicate; redriven || d.resultOut {
				if err := stream.DeleteMsg(ctx, d.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
					return items, fmt.Errorf("delete dead letter %d: %w", d.Seq, err)
				}
				it.Deleted = true
			}
		}
		items = append(items, it)
	}
	return items, nil
}
