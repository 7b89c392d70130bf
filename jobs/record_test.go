package jobs

import (
	"testing"
	"time"
)

func TestRecordResultOut(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		rec  Record
		want bool
	}{
		{"pending", Record{State: StatePending}, false},
		{"delivered", Record{State: StateDelivered}, true},
		{"timed out", Record{State: StateTimedOut}, false},
		{"timed out, late result out", Record{State: StateTimedOut, LateDeliveredAt: &now}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rec.ResultOut(); got != tt.want {
				t.Fatalf("ResultOut = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDefaultDeadlines(t *testing.T) {
	d := DefaultDeadlines()
	for m, want := range map[string]time.Duration{"prompt": 5 * time.Minute, "video": 15 * time.Minute, "other": 5 * time.Minute} {
		if got := d.For(m); got != want {
			t.Errorf("For(%s) = %v, want %v", m, got, want)
		}
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"0f8fad5b-d9cb-469f-a165-70867728950e", true},
		{"0F8FAD5B-D9CB-469F-A165-70867728950E", true},
		{"{0f8fad5b-d9cb-469f-a165-70867728950e}", false},
		{"urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e", false},
		{"0f8fad5bd9cb469fa16570867728950e", false},
		{"0f8fad5b-d9cb-469f-a165-70867728950g", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}
