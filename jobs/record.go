package jobs

import (
	"encoding/json"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
)

// State is where a job stands from the bridge's point of view.
type State string

// Job states.
const (
	// StatePending: no result published yet.
	StatePending State = "pending"
	// StateDelivered: the upstream's verified result is on results.<type>.
	StateDelivered State = "delivered"
	// StateTimedOut: the bridge published a timeout result; a later verified result goes to results.late.
	StateTimedOut State = "timed_out"
)

// Origin says how the bridge learned about a job.
const (
	OriginSubmit  = "submit"
	OriginWebhook = "webhook"
	// OriginAdopted: a job of the account the bridge found in the upstream's list with BRIDGE_ADOPT.
	OriginAdopted = "adopted"
)

// Record is the JOBS value of one job. It is the long-term idempotency record.
type Record struct {
	JobID    string `json:"job_id"`
	Modality string `json:"modality"`
	State    State  `json:"state"`
	// Origin is submit for jobs submitted through the bridge, webhook for jobs first seen in a webhook.
	Origin      string    `json:"origin"`
	SubmittedAt time.Time `json:"submitted_at"`
	Deadline    time.Time `json:"deadline"`
	// IdempotencyKey is the submitter's key, when one was given.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// TraceParent and TraceState are the W3C trace context of whoever made the record: the submit
	// request's span, or the verification of the webhook that created it. A result published without a
	// trace context of its own (a poll, a timeout) carries this one. Empty without one.
	TraceParent string `json:"trace_parent,omitempty"`
	TraceState  string `json:"trace_state,omitempty"`

	// WebhookReceivedAt is when ingest received the first webhook for the job.
	WebhookReceivedAt *time.Time `json:"webhook_received_at,omitempty"`
	// Attempts counts verification attempts (GET /job calls for this job).
	Attempts int `json:"attempts"`
	// LastStatus is the last upstream status seen; LastCheckedAt when.
	LastStatus    string     `json:"last_status,omitempty"`
	LastCheckedAt *time.Time `json:"last_checked_at,omitempty"`
	// LastJob is the last GET /job/{id} answer, the base of a timeout result.
	LastJob json.RawMessage `json:"last_job,omitempty"`
	// LastError is the last error met while verifying, for operators.
	LastError string `json:"last_error,omitempty"`

	// Source, ResultSubject, ResultSeq and DeliveredAt describe the published result.
	Source        string     `json:"source,omitempty"`
	ResultSubject string     `json:"result_subject,omitempty"`
	ResultSeq     uint64     `json:"result_seq,omitempty"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
	// LateSeq and LateDeliveredAt describe the late result of a timed-out job.
	LateSeq         uint64     `json:"late_seq,omitempty"`
	LateDeliveredAt *time.Time `json:"late_delivered_at,omitempty"`
}

// Trace is the record's trace context ([contract.Trace]); zero without one.
func (r Record) Trace() contract.Trace {
	return contract.Trace{Parent: r.TraceParent, State: r.TraceState}
}

// SetTrace keeps t as the record's trace context.
func (r *Record) SetTrace(t contract.Trace) { r.TraceParent, r.TraceState = t.Parent, t.State }

// ResultOut reports whether the job needs no more verification: its result is published, and for a
// timed-out job its late result too.
func (r Record) ResultOut() bool {
	return r.State == StateDelivered || (r.State == StateTimedOut && r.LateDeliveredAt != nil)
}

// Deadlines maps a modality to how long its jobs may stay pending. Unknown modalities get Default.
type Deadlines struct {
	ByModality map[string]time.Duration
	Default    time.Duration
}

// DefaultDeadlines are the upstream's recommended give-up times, the deadlines of the modalities of
// both contracts ([contract.ModalitiesFor]): 5 min, 15 min for video and audio.
func DefaultDeadlines() Deadlines {
	d := Deadlines{ByModality: map[string]time.Duration{}, Default: 5 * time.Minute}
	for _, m := range contract.ModalitiesFor(contract.ContractAuto) {
		d.ByModality[m.Name] = m.Deadline
	}
	return d
}

// For returns the deadline duration of modality.
func (d Deadlines) For(modality string) time.Duration {
	if v, ok := d.ByModality[modality]; ok && v > 0 {
		return v
	}
	if d.Default > 0 {
		return d.Default
	}
	return 5 * time.Minute
}

// compact shrinks a record whose result is out to its tombstone: what the result was and where it is.
// The last upstream answer and error are no longer needed (a timeout result was built from them, a late
// result comes from a fresh answer), and the record is kept for ever, so every byte counts.
func (r *Record) compact() {
	r.LastJob, r.LastError = nil, ""
}

// HistoryEntry is what the history keeps of r once it is compacted: its id, when its result went out
// and the RESULTS sequence of that result (for a timed-out job, the timeout result's; its late result,
// if any, is found by time in RESULTS).
func (r Record) HistoryEntry() history.Entry {
	e := history.Entry{JobID: r.JobID, ResultSeq: r.ResultSeq}
	if r.DeliveredAt != nil {
		e.DeliveredAt = *r.DeliveredAt
	}
	return e
}

// KeyHash is the BRIDGE_IDEMPOTENCY key of r's Idempotency-Key ([contract.IdempotencyKeyHash] of its
// modality and key), "" without a key. The modality is the submit endpoint's, as submit recorded it.
func (r Record) KeyHash() string {
	if r.IdempotencyKey == "" {
		return ""
	}
	return contract.IdempotencyKeyHash(r.Modality, r.IdempotencyKey)
}

// KeyHistoryEntry is what the history keeps of r's Idempotency-Key once r is compacted: the key's
// [contract.IdempotencyHistoryID], with r's delivery time and RESULTS sequence, so that a retry with the
// key after its entry left BRIDGE_IDEMPOTENCY finds the job's result. ok is false without a key.
func (r Record) KeyHistoryEntry() (e history.Entry, ok bool) {
	if r.IdempotencyKey == "" {
		return history.Entry{}, false
	}
	e = r.HistoryEntry()
	e.JobID = contract.IdempotencyHistoryID(r.Modality, r.IdempotencyKey)
	return e, true
}
