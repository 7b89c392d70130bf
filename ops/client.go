package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/evershield/bridge/contract"
)

// SubmitReply is the submit service's answer.
type SubmitReply struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"`
}

// SubmitRequest is one moderation request: Fields are the upstream's form fields (prompt, image_url,
// ...) for moderate.<Modality>; with IdempotencyKey a retry returns the same job.
type SubmitRequest struct {
	Modality       string
	Fields         map[string]string
	IdempotencyKey string
	// Names are the bridge's names (its namespace's); the zero Names means contract.Default.
	Names contract.Names
}

// Submit sends r to moderate.<Modality>. A refusal is a [*ServiceError].
func Submit(ctx context.Context, nc *nats.Conn, r SubmitRequest) (SubmitReply, json.RawMessage, error) {
	body, err := json.Marshal(r.Fields)
	if err != nil {
		return SubmitReply{}, nil, err
	}
	m := nats.NewMsg(r.Names.OrDefault().SubjectSubmit + r.Modality)
	m.Data = body
	if r.IdempotencyKey != "" {
		m.Header.Set(contract.HeaderIdempotencyKey, r.IdempotencyKey)
	}
	raw, err := request(ctx, nc, m)
	if err != nil {
		return SubmitReply{}, raw, err
	}
	var rep SubmitReply
	if err := json.Unmarshal(raw, &rep); err != nil || rep.JobID == "" {
		return SubmitReply{}, raw, fmt.Errorf("submit %s: unexpected reply %q", r.Modality, raw)
	}
	return rep, raw, nil
}

// JobStatus asks jobs.status (of the bridge of names) for a job and returns the reply as sent: {"job": ..., "result": ...}. An
// unknown job is a [*ServiceError] with code 404.
func JobStatus(ctx context.Context, nc *nats.Conn, names contract.Names, jobID string) (json.RawMessage, error) {
	body, _ := json.Marshal(map[string]string{"job_id": jobID})
	m := nats.NewMsg(names.OrDefault().SubjectJobStatus)
	m.Data = body
	return request(ctx, nc, m)
}

// HasResult reports whether a jobs.status reply says the job's result is out: it carries the result, or
// the job is in the history.
func HasResult(reply json.RawMessage) bool {
	var v struct {
		Result  json.RawMessage `json:"result"`
		History json.RawMessage `json:"history"`
	}
	if json.Unmarshal(reply, &v) != nil {
		return false
	}
	out := func(m json.RawMessage) bool { return len(m) > 0 && string(m) != "null" }
	return out(v.Result) || out(v.History) // a compacted job's result went out, though retention may have removed it
}

func request(ctx context.Context, nc *nats.Conn, m *nats.Msg) (json.RawMessage, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	resp, err := nc.RequestMsgWithContext(ctx, m)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("request %s: %w: no bridge with the submit role serves it on this NATS (is one running, "+
			"in this namespace and account?)", m.Subject, err)
	}
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", m.Subject, err)
	}
	if code := resp.Header.Get(micro.ErrorCodeHeader); code != "" {
		ra, _ := strconv.Atoi(resp.Header.Get(contract.HeaderRetryAfter))
		return json.RawMessage(resp.Data), &ServiceError{Code: code, Description: resp.Header.Get(micro.ErrorHeader), RetryAfter: ra}
	}
	return json.RawMessage(resp.Data), nil
}
