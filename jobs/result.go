package jobs

import (
	"encoding/json"
	"time"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/upstream"
)

// Meta is the bridge block added to every result message.
type Meta struct {
	// SchemaVersion is the result message's version, [contract.ResultSchemaVersion]; resultBody sets it.
	SchemaVersion int        `json:"schema_version"`
	Source        string     `json:"source"`
	ReceivedAt    time.Time  `json:"received_at"`
	VerifiedAt    *time.Time `json:"verified_at"`
	// Filled names the top-level fields the bridge filled in because the upstream's object lacked them
	// (["type"]): they are the bridge's knowledge, not upstream data.
	Filled []string `json:"filled,omitempty"`
}

// FieldType is the result field the bridge fills from the record's modality when the upstream's
// object has no type (the v2 webhook body has none).
const FieldType = "type"

// timeoutOverrides are the fields DESIGN.md sets on a timeout result.
var timeoutOverrides = map[string]json.RawMessage{
	"status":        json.RawMessage(`"failed"`),
	"error_code":    json.RawMessage(`"BRIDGE_TIMEOUT"`),
	"is_prohibited": json.RawMessage(`null`),
	"completed_at":  json.RawMessage(`null`),
}

// resultBody is the upstream object base with overrides applied and the bridge block m added; unknown
// fields of base are kept. When base has no type (absent, null or ""), type is set to modality, the
// modality the bridge recorded, and the bridge block says so in filled.
func resultBody(base json.RawMessage, modality string, overrides map[string]json.RawMessage, m Meta) ([]byte, error) {
	obj := map[string]json.RawMessage{}
	if len(base) > 0 {
		if err := json.Unmarshal(base, &obj); err != nil {
			return nil, err
		}
	}
	for k, v := range overrides {
		obj[k] = v
	}
	m.SchemaVersion, m.ReceivedAt = contract.ResultSchemaVersion, m.ReceivedAt.UTC()
	if t, ok := obj[FieldType]; modality != "" && (!ok || string(t) == "null" || string(t) == `""`) {
		obj[FieldType], _ = json.Marshal(modality)
		m.Filled = []string{FieldType}
	}
	meta, err := json.Marshal(m)
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
