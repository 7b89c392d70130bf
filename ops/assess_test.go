package ops

import (
	"strings"
	"testing"
)

// TestBudgetSaturationNeedsALongSample: the budget allows bursts, so a 2 s sample above the rate is not
// flagged, while the same use averaged over 10 s or more is.
func TestBudgetSaturationNeedsALongSample(t *testing.T) {
	use, calls := 1.5, 90.0
	tests := []struct {
		name   string
		sample float64
		want   bool
	}{
		{"short sample, a burst", 2, false},
		{"long sample, saturated", 12, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := &Report{Bridges: []BridgeStatus{{URL: "http://b/metrics", SampleSeconds: tt.sample,
				CallsPerMinute: &calls, BudgetUse: &use, BudgetRPM: 60}}}
			var attn attention
			assess(rep, StatusConfig{}, &attn)
			got := strings.Contains(strings.Join(attn.list(), "\n"), "upstream budget")
			if got != tt.want {
				t.Fatalf("budget flagged = %v, want %v (attention %q)", got, tt.want, attn.list())
			}
		})
	}
}
