package jobs

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestResultBodyFillsTypeAndSaysSo: a type the upstream gave is kept as it is (v2 "text" for a prompt
// job); a missing one is filled from the record's modality and listed in bridge.filled, so nothing the
// bridge invented passes for upstream data.
func TestResultBodyFillsTypeAndSaysSo(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name, base, modality string
		wantType             string
		wantFilled           []string
	}{
		{"upstream type kept", `{"job_id":"j","type":"text","status":"completed"}`, "prompt", "text", nil},
		{"missing type filled", `{"job_id":"j","status":"completed"}`, "prompt", "prompt", []string{"type"}},
		{"null type filled", `{"job_id":"j","type":null,"status":"completed"}`, "audio", "audio", []string{"type"}},
		{"empty type filled", `{"job_id":"j","type":"","status":"completed"}`, "image", "image", []string{"type"}},
		{"no modality, nothing filled", `{"job_id":"j","status":"completed"}`, "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := resultBody(json.RawMessage(tt.base), tt.modality, nil, Meta{Source: "webhook", ReceivedAt: now, VerifiedAt: &now})
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Type   string `json:"type"`
				Bridge struct {
					Filled []string `json:"filled"`
				} `json:"bridge"`
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.wantType || !reflect.DeepEqual(got.Bridge.Filled, tt.wantFilled) {
				t.Fatalf("type %q filled %v, want %q %v (body %s)", got.Type, got.Bridge.Filled, tt.wantType, tt.wantFilled, b)
			}
		})
	}
}

// TestResultTypeIsTheRecordsModality: the subject's type is the modality the record holds (the submit
// endpoint used), not the upstream's type: a v2 "text" job submitted as moderate.prompt stays on
// results.prompt.
func TestResultTypeIsTheRecordsModality(t *testing.T) {
	for _, tc := range []struct{ jobType, modality, want string }{
		{"text", "prompt", "prompt"},
		{"text", "chat", "chat"},
		{"image", "image", "image"},
		{"text", "", "text"},
	} {
		if got := resultType(tc.jobType, tc.modality); got != tc.want {
			t.Fatalf("resultType(%q, %q) = %q, want %q", tc.jobType, tc.modality, got, tc.want)
		}
	}
}
