package submit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/text"
	"github.com/evershield/bridge/jobs"
)

// StatusRequest is the body of a jobs.status request.
type StatusRequest struct {
	JobID string `json:"job_id"`
}

// StatusReply is the answer to a jobs.status request: the JOBS record, the result message as published
// on RESULTS (null while none, or once retention removed it) and, for a timed-out job the upstream
// finished later, the late result. For a job compacted into the history, Job is null and History says
// when its result went out and at which RESULTS sequence.
type StatusReply struct {
	Job        *jobs.Record    `json:"job"`
	History    *history.Entry  `json:"history,omitempty"`
	Result     json.RawMessage `json:"result"`
	LateResult json.RawMessage `json:"late_result,omitempty"`
}

const statusLabel = "status"

// handleStatus serves jobs.status.
func (s *Service) handleStatus(base context.Context, req micro.Request) {
	ctx, cancel := context.WithTimeout(base, 10*time.Second)
	defer cancel()
	var r StatusRequest
	if err := json.Unmarshal(req.Data(), &r); err != nil {
		s.reply(answer{req, statusLabel}, "invalid", badRequest(`body must be {"job_id": "<uuid>"}`))
		return
	}
	id, ok := jobs.CanonicalID(r.JobID)
	if !ok {
		s.reply(answer{req, statusLabel}, "invalid", badField("job_id", "job_id %q is not a UUID", text.Truncate(r.JobID, 64)))
		return
	}
	r.JobID = id
	reply, err := s.statusOf(ctx, r.JobID)
	if errors.Is(err, jobs.ErrNotFound) {
		s.reply(answer{req, statusLabel}, "not_found", &replyError{code: "404", desc: "JOB_NOT_FOUND: the bridge has no job " + r.JobID})
		return
	}
	if err != nil {
		s.log.Error().Err(err).Str("job_id", r.JobID).Msg("job status: read record")
		s.reply(answer{req, statusLabel}, "error", &replyError{code: "503", desc: "UNAVAILABLE: job store: " + err.Error()})
		return
	}
	seq, lateSeq := reply.resultSeqs()
	if seq != 0 || lateSeq != 0 {
		// One stream lookup for both reads.
		var st jetstream.Stream
		if st, err = s.cfg.JS.Stream(ctx, s.cfg.Names.StreamResults); err != nil {
			err = fmt.Errorf("stream %s: %w", s.cfg.Names.StreamResults, err)
		} else if reply.Result, err = readResult(ctx, st, seq); err == nil {
			reply.LateResult, err = readResult(ctx, st, lateSeq)
		}
	}
	if err != nil {
		s.log.Error().Err(err).Str("job_id", r.JobID).Msg("job status: read result")
		s.reply(answer{req, statusLabel}, "error", &replyError{code: "503", desc: "UNAVAILABLE: results stream: " + err.Error()})
		return
	}
	s.reply(answer{req, statusLabel}, "ok", nil, reply)
}

// statusOf is the job's record, or its history entry once compacted (hot first, then history), or
// jobs.ErrNotFound.
func (s *Service) statusOf(ctx context.Context, id string) (StatusReply, error) {
	rec, _, err := s.cfg.Store.Get(ctx, id)
	if err == nil {
		return StatusReply{Job: &rec}, nil
	}
	if !errors.Is(err, jobs.ErrNotFound) || s.cfg.History == nil {
		return StatusReply{}, err
	}
	e, ok, err := s.cfg.History.Lookup(ctx, id)
	switch {
	case err != nil:
		return StatusReply{}, err
	case !ok:
		return StatusReply{}, jobs.ErrNotFound
	}
	return StatusReply{History: &e}, nil
}

// resultSeqs are the RESULTS sequences of the reply's result and late result, 0 for none.
func (r StatusReply) resultSeqs() (seq, late uint64) {
	if r.Job != nil {
		return r.Job.ResultSeq, r.Job.LateSeq
	}
	return r.History.ResultSeq, 0
}

// readResult returns the RESULTS message at seq, or nil for seq 0 or a message retention removed.
func readResult(ctx context.Context, st jetstream.Stream, seq uint64) (json.RawMessage, error) {
	if seq == 0 {
		return nil, nil
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("result seq %d: %w", seq, err)
	}
	return json.RawMessage(m.Data), nil
}
