package jobs

import (
	"encoding/json"
	"time"

	"github.com/evershield/bridge/upstream"
)

// Meta is the bridge block added to every result message.
type Meta struct {
	Source     string     `json:"source"`
	ReceivedAt time.Time  `json:"received_at"`
	VerifiedAt *time.Time `json:"verified_at"`
}

// timeoutOverrides are the fields DESIGN.md sets on a timeout result.
var timeoutOverrides = map[string]json.RawMessage{
	"status":        json.RawMessage(`"failed"`),
	"error_code":    json.RawMessage(`"BRIDGE_TIMEOUT"`),
	"is_prohibited": json.RawMessage(`null`),
	"completed_at":  json.RawMessage(`null`),
}

// resultBody is the upstream object base with overrides applied and the bridge block added; unknown
// fields of base are kept.
func resultBody(base json.RawMessage, overrides map[string]json.RawMessage, source string, receivedAt time.Time, verifiedAt *time.Time) ([]byte, error) {
	obj := map[string]json.RawMessage{}
	if len(base) > 0 {
		if err := json.Unmarshal(base, &obj); err != nil {
			return nil, err
		}
	}
	for k, v := range overrides {
		obj[k] = v
	}
	meta, err := json.Marshal(Meta{Source: source, ReceivedAt: receivedAt.UTC(), VerifiedAt: verifiedAt})
	if err != nil {
		return nil, err
	}
	obj["bridge"] = meta
	return json.Marshal(obj)
}

// timeoutBase is the object a timeout result starts from, and its result type: the upstream's last
// answer, else the one recorded, else a synthesized job with the submitted modality.
func timeoutBase(rec Record, last *upstream.Job) (json.RawMessage, string) {
	if last != nil && len(last.Raw) > 0 {
		return last.Raw, resultType(last.Type, rec.Modality)
	}
	if len(rec.LastJob) > 0 {
		var j upstream.Job
		if json.Unmarshal(rec.LastJob, &j) == nil {
			return rec.LastJob, resultType(j.Type, rec.Modality)
		}
	}
	synth, _ := json.Marshal(map[string]any{
		"job_id": rec.JobID, "type": rec.Modality, "categories": map[string]any{"custom": map[string]any{}},
		"created_at": rec.SubmittedAt,
	})
	return synth, rec.Modality
}
