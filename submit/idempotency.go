package submit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// Idempotency entry states.
const (
	idemReserved = "reserved" // a request with the key is being submitted
	idemDone     = "done"     // the key maps to JobID
	idemUnknown  = "unknown"  // the submission got no answer; its job may exist
)

var (
	errIdemBusy        = errors.New("a request with this Idempotency-Key is still being submitted; retry later")
	errIdemInterrupted = errors.New("the submission with this Idempotency-Key was interrupted (the bridge stopped while it talked to the upstream), " +
		"so its job may exist upstream without the bridge knowing; look for it with GET /jobs or BRIDGE_ADOPT=true, or use a new key to submit again")
	errIdemUnknown = errors.New("the first submission with this Idempotency-Key got no answer from the upstream, so its job may exist; use a new key to submit again")
	// errIdemExpired: the key's job was compacted and its result is past RESULTS's retention.
	errIdemExpired = errors.New("its result is past the results' retention (BRIDGE_RETENTION), so the bridge no longer knows its job_id; use a new key to submit again")
)

// idemEntry is the value of an idempotency key in [contract.BucketIdempotency].
type idemEntry struct {
	State  string    `json:"state"`
	JobID  string    `json:"job_id,omitempty"`
	Status string    `json:"status,omitempty"`
	At     time.Time `json:"at"`
}

// reservation is this request's hold on an idempotency key. Its methods are no-ops on nil (no key).
type reservation struct {
	s   *Service
	key string
	rev uint64
}

// idemKey is the bucket key of an idempotency key ([contract.IdempotencyKeyHash]).
func idemKey(modality, key string) string { return contract.IdempotencyKeyHash(modality, key) }

// reserve takes the key for this request (returning a reservation), or returns the entry of an earlier
// request that completed. While another request holds the key, it waits up to IdempotencyWait.
func (s *Service) reserve(ctx context.Context, modality, key string) (*reservation, *idemEntry, error) {
	k := idemKey(modality, key)
	val, _ := json.Marshal(idemEntry{State: idemReserved, At: s.cfg.Now().UTC()})
	deadline := time.Now().Add(s.cfg.IdempotencyWait)
	for {
		rev, err := s.cfg.Idempotency.Create(ctx, k, val)
		if err == nil {
			return &reservation{s: s, key: k, rev: rev}, nil, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, nil, fmt.Errorf("reserve idempotency key: %w", err)
		}
		e, err := s.cfg.Idempotency.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // the holder gave the key up: try to take it
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read idempotency key: %w", err)
		}
		var ent idemEntry
		if err := json.Unmarshal(e.Value(), &ent); err != nil {
			return nil, nil, fmt.Errorf("decode idempotency entry: %w", err)
		}
		switch ent.State {
		case idemDone:
			return nil, &ent, nil
		case idemUnknown:
			return nil, nil, errIdemUnknown
		}
		// Reserved: the first request is talking to the upstream, or its process stopped doing so: a
		// reservation older than any submission takes was interrupted, and waiting would not help.
		if s.cfg.Now().Sub(ent.At) > s.staleAfter() {
			return nil, nil, errIdemInterrupted
		}
		// Polling is bounded by IdempotencyWait.
		if time.Now().After(deadline) {
			return nil, nil, errIdemBusy
		}
		if retry.Sleep(ctx, 50*time.Millisecond) != nil {
			return nil, nil, errIdemBusy
		}
	}
}

func idemError(err error) *replyError {
	switch {
	case errors.Is(err, errIdemBusy):
		return &replyError{code: "409", desc: "IDEMPOTENCY_IN_PROGRESS: " + err.Error()}
	case errors.Is(err, errIdemUnknown):
		return &replyError{code: "409", desc: "IDEMPOTENCY_UNKNOWN: " + err.Error()}
	case errors.Is(err, errIdemInterrupted):
		return &replyError{code: "409", desc: "IDEMPOTENCY_INTERRUPTED: " + err.Error()}
	case errors.Is(err, errIdemExpired):
		return &replyError{code: "409", desc: "IDEMPOTENCY_EXPIRED: " + err.Error()}
	}
	return &replyError{code: "503", desc: "IDEMPOTENCY_UNAVAILABLE: " + err.Error()}
}

// settleTimeout bounds an idempotency write that runs after the request's own ctx ended.
const settleTimeout = 5 * time.Second

// settleCtx is for writes that must happen even though the request's ctx ended.
func settleCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
}

// hash is the bucket key of the reservation's Idempotency-Key, "" without one.
func (r *reservation) hash() string {
	if r == nil {
		return ""
	}
	return r.key
}

// release gives the key up after a final upstream error: a retry with the key may submit again.
func (r *reservation) release(ctx context.Context) {
	if r == nil {
		return
	}
	ctx, cancel := settleCtx(ctx)
	defer cancel()
	if err := r.s.cfg.Idempotency.Delete(ctx, r.key, jetstream.LastRevision(r.rev)); err != nil {
		r.s.log.Warn().Err(err).Msg("release idempotency key; it expires with its TTL")
	}
}

// drop removes the reservation without a trace ([Service.purge]): the key's job is answered from the
// history, and the key needs no entry.
func (r *reservation) drop(ctx context.Context) {
	if r == nil {
		return
	}
	ctx, cancel := settleCtx(ctx)
	defer cancel()
	if err := r.s.purge(ctx, r.key, r.rev); err != nil {
		r.s.log.Warn().Err(err).Msg("remove idempotency reservation; it expires with its TTL")
	}
}

// markUnknown records that the submission got no answer: later requests with the key get 409.
func (r *reservation) markUnknown(ctx context.Context) {
	if r == nil {
		return
	}
	r.put(ctx, idemEntry{State: idemUnknown, At: r.s.cfg.Now().UTC()}, r.s.log)
}

// complete maps the key to the job.
func (r *reservation) complete(ctx context.Context, jobID, status string, log zerolog.Logger) {
	if r == nil {
		return
	}
	r.put(ctx, idemEntry{State: idemDone, JobID: jobID, Status: status, At: r.s.cfg.Now().UTC()}, log)
}

func (r *reservation) put(ctx context.Context, ent idemEntry, log zerolog.Logger) {
	ctx, cancel := settleCtx(ctx)
	defer cancel()
	val, _ := json.Marshal(ent)
	if _, err := r.s.cfg.Idempotency.Update(ctx, r.key, val, r.rev); err != nil {
		log.Warn().Err(err).Str("state", ent.State).Msg("update idempotency key")
	}
}

// compacted reports whether a job whose record read failed with err was delivered and compacted into the
// history: its record must not be written again (as pending, it would be verified and timed out anew).
func (s *Service) compacted(ctx context.Context, id string, err error, log zerolog.Logger) bool {
	if !errors.Is(err, jobs.ErrNotFound) || s.cfg.History == nil {
		return false
	}
	in, err := s.cfg.History.Delivered(ctx, id)
	if err != nil {
		log.Warn().Err(err).Msg("idempotent replay: history lookup failed; writing the job record")
	}
	return in
}

// replayIdempotent answers a request whose key maps to a job already: the same reply as the first time.
// It also writes the job's JOBS record if the first request could not.
func (s *Service) replayIdempotent(ctx context.Context, a answer, key string, ent *idemEntry) {
	modality := a.label
	log := s.log.With().Str("modality", modality).Str("job_id", ent.JobID).Logger()
	if _, _, err := s.cfg.Store.Get(ctx, ent.JobID); err != nil && !s.compacted(ctx, ent.JobID, err, log) {
		if err := s.record(ctx, ent.JobID, modality, key); err != nil {
			log.Error().Err(err).Msg("idempotent replay: job record still cannot be written")
			data, _ := json.Marshal(Reply{JobID: ent.JobID, Status: ent.Status})
			s.reply(a, "store_error", &replyError{code: "500", data: data,
				desc: fmt.Sprintf("STORE_FAILED: job %s was accepted by the upstream but not recorded: %v", ent.JobID, err)})
			return
		}
	}
	log.Debug().Msg("idempotent replay")
	s.reply(a, "idempotent_replay", nil, Reply{JobID: ent.JobID, Status: ent.Status})
}

// fromHistory answers a request whose Idempotency-Key it has just reserved afresh when the key's job was
// compacted: the compactor put the key into the history with the job (its [contract.IdempotencyHistoryID],
// the job's delivery time and RESULTS sequence) before it purged the key's entry, so an absent entry and
// a key in the history mean the key's job was delivered. The reservation is removed again, and the
// request gets the reply of a completed key, its job_id read from the job's result in RESULTS; once
// retention removed that result, 409 IDEMPOTENCY_EXPIRED. done is false when the key is not in the
// history (or there is none): the request submits.
func (s *Service) fromHistory(ctx context.Context, a answer, res *reservation, key string) (done bool) {
	if s.cfg.History == nil || res == nil {
		return false
	}
	e, ok, err := s.cfg.History.Lookup(ctx, contract.IdempotencyHistoryID(a.label, key))
	if err == nil && !ok {
		return false
	}
	res.drop(ctx)
	if err != nil {
		s.reply(a, "conflict", idemError(fmt.Errorf("look the key up in the history: %w", err)))
		return true
	}
	r, err := s.compactedReply(ctx, e)
	if errors.Is(err, errIdemExpired) {
		when := "at an unknown time"
		if !e.DeliveredAt.IsZero() {
			when = "at " + e.DeliveredAt.UTC().Format(time.RFC3339)
		}
		s.reply(a, "conflict", idemError(fmt.Errorf("the job of this Idempotency-Key was delivered %s; %w", when, err)))
		return true
	}
	if err != nil {
		s.reply(a, "conflict", idemError(fmt.Errorf("read the key's result: %w", err)))
		return true
	}
	s.log.Debug().Str("modality", a.label).Str("job_id", r.JobID).Msg("idempotent replay from the history")
	s.reply(a, "idempotent_replay", nil, r)
	return true
}

// compactedReply is the reply to a retried key of a compacted job whose history entry is e: the job_id
// of the result at e.ResultSeq (its Nats-Msg-Id) and status queued, as a submit reply says (the job's
// outcome is its result). errIdemExpired when RESULTS no longer holds it.
func (s *Service) compactedReply(ctx context.Context, e history.Entry) (Reply, error) {
	if e.ResultSeq == 0 {
		return Reply{}, errIdemExpired
	}
	st, err := s.cfg.JS.Stream(ctx, s.cfg.Names.StreamResults)
	if err != nil {
		return Reply{}, fmt.Errorf("stream %s: %w", s.cfg.Names.StreamResults, err)
	}
	m, err := st.GetMsg(ctx, e.ResultSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Reply{}, errIdemExpired
	}
	if err != nil {
		return Reply{}, fmt.Errorf("result seq %d: %w", e.ResultSeq, err)
	}
	id, ok := jobs.CanonicalID(strings.TrimSuffix(m.Header.Get(jetstream.MsgIDHeader), contract.LateSuffix))
	if !ok {
		return Reply{}, fmt.Errorf("result seq %d: Nats-Msg-Id %q names no job", e.ResultSeq, m.Header.Get(jetstream.MsgIDHeader))
	}
	return Reply{JobID: id, Status: upstream.StatusQueued}, nil
}
