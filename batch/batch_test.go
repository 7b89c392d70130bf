package batch

import (
	"testing"
	"time"
)

// TestSpansMergeWithinMaxSpan: windows that one call covers within the longest span share it, gap or
// no gap; one further away gets a call of its own.
func TestSpansMergeWithinMaxSpan(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	serve := map[string]*lookup{
		"a": {win: Window{at(0), at(4)}},
		"b": {win: Window{at(2), at(6)}},   // overlaps a
		"c": {win: Window{at(30), at(34)}}, // a gap, but a..c spans 34 min
		"d": {win: Window{at(90), at(94)}}, // 94 min from a: a call of its own
	}
	got := spans(serve, time.Hour)
	want := []Window{{at(0), at(34)}, {at(90), at(94)}}
	if len(got) != len(want) {
		t.Fatalf("spans %v, want %v", got, want)
	}
	for i := range want {
		if !got[i].From.Equal(want[i].From) || !got[i].To.Equal(want[i].To) {
			t.Errorf("span %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestCost: a GET each while that is cheaper, else a call per eight and one for the round under way.
func TestCost(t *testing.T) {
	for _, c := range []struct {
		owed, min int
		want      float64
	}{{1, 8, 1}, {2, 8, 2}, {9, 8, 3}, {16, 8, 3}, {17, 8, 4}, {100, 8, 14}, {100, 1, 100}} {
		if got := Cost(c.owed, c.min); got != c.want {
			t.Errorf("Cost(%d, %d) = %v, want %v", c.owed, c.min, got, c.want)
		}
	}
}

// TestWindows: an own job's window is its submission ± 2 min; another's reaches the lookback and 2 min
// more before its webhook, and 2 min after.
func TestWindows(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	own := OwnWindow(t0)
	if !own.From.Equal(t0.Add(-2*time.Minute)) || !own.To.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("OwnWindow = %v", own)
	}
	rw := ReceivedWindow(t0, 20*time.Minute)
	if !rw.From.Equal(t0.Add(-22*time.Minute)) || !rw.To.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("ReceivedWindow = %v", rw)
	}
	if !rw.Covers(t0.Add(-22*time.Minute)) || rw.Covers(t0.Add(2*time.Minute)) {
		t.Error("Covers: from is inclusive, to exclusive")
	}
}

// TestScarce: scarce once the owed exceed what the budget grants in 2 s.
func TestScarce(t *testing.T) {
	capacity := func(d time.Duration) float64 { return d.Seconds() } // 1 a second, nothing held
	if Scarce(2, capacity) || !Scarce(3, capacity) {
		t.Errorf("Scarce(2)=%v Scarce(3)=%v at one call a second, want false, true", Scarce(2, capacity), Scarce(3, capacity))
	}
}
