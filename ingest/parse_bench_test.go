package ingest

import (
	"encoding/json"
	"testing"
)

// BenchmarkJobID is the JSON check and job id of a typical v1 webhook body, beside json.Valid alone.
func BenchmarkJobID(b *testing.B) {
	body := []byte(`{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f","type":"prompt","status":"completed","is_prohibited":false,` +
		`"categories":{"custom":{"violence":0.01,"self_harm":0.0}},"created_at":"2025-01-01T00:00:00Z","completed_at":"2025-01-01T00:00:02Z"}`)
	b.Run("jobID", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jobID(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !json.Valid(body) {
				b.Fatal("invalid")
			}
		}
	})
}
