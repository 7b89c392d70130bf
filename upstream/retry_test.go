package upstream

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestRetryHint: the wait a 429 asks for, which the client hands its Limiter.
func TestRetryHint(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		hdr  map[string]string
		want time.Duration
	}{
		{"none", nil, 0},
		{"retry-after seconds", map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"retry-after date", map[string]string{"Retry-After": now.Add(90 * time.Second).UTC().Format(http.TimeFormat)}, 89 * time.Second},
		{"reset seconds", map[string]string{"X-Ratelimit-Reset": "12"}, 12 * time.Second},
		{"reset epoch", map[string]string{"X-Ratelimit-Reset": fmt.Sprint(now.Add(20 * time.Second).Unix())}, 18 * time.Second},
		{"retry-after wins", map[string]string{"Retry-After": "3", "X-Ratelimit-Reset": "12"}, 3 * time.Second},
		{"junk", map[string]string{"Retry-After": "soon"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.hdr {
				h.Set(k, v)
			}
			got := retryHint(h, now)
			// Dates have whole-second precision: accept up to 2s above want.
			if got < tt.want || got > tt.want+2*time.Second || (tt.want == 0 && got != 0) {
				t.Fatalf("retryHint = %v, want ~%v", got, tt.want)
			}
		})
	}
}
