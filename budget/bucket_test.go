package budget

import (
	"testing"
	"time"

	"github.com/evershield/bridge/internal/clock"
	"github.com/evershield/bridge/upstream"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// TestParamsFromTheContract pins the arithmetic DESIGN.md's budget rules come from: burst defaults to
// five seconds' worth, and a lease's life is taken off the bucket so Burst + RPM×W holds for every window.
func TestParamsFromTheContract(t *testing.T) {
	tests := []struct {
		name             string
		rpm, burst       int
		wantBurst        int
		wantCap, wantRes float64
		wantLease        time.Duration
	}{
		{name: "60 per minute, default burst", rpm: 60, wantBurst: 5, wantCap: 4, wantRes: 1, wantLease: time.Second},
		{name: "600 per minute, default burst", rpm: 600, wantBurst: 50, wantCap: 40, wantRes: 1, wantLease: time.Second},
		{name: "burst 1 leaves no lease life", rpm: 60, burst: 1, wantBurst: 1, wantCap: 1, wantRes: 0, wantLease: 0},
		{name: "burst 3 at 120/min", rpm: 120, burst: 3, wantBurst: 3, wantCap: 1, wantRes: 0, wantLease: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewParams(tt.rpm, tt.burst)
			if p.Burst != tt.wantBurst || p.Capacity != tt.wantCap || p.Reserve != tt.wantRes || p.LeaseTTL != tt.wantLease {
				t.Fatalf("got burst %d capacity %v reserve %v lease %v; want %d %v %v %v", p.Burst, p.Capacity,
					p.Reserve, p.LeaseTTL, tt.wantBurst, tt.wantCap, tt.wantRes, tt.wantLease)
			}
		})
	}
}

// TestIdleBucketThenBurst: a bucket idle for a minute holds its capacity and no more, gives it at once,
// then one token per second at 60/min.
func TestIdleBucketThenBurst(t *testing.T) {
	p := NewParams(60, 5)
	s := State{Level: 0, At: t0.UnixNano()}
	now := t0.Add(time.Minute)
	s, n := s.Lease(p, now, upstream.ClassVerify, 100)
	if n != 4 {
		t.Fatalf("idle bucket gave %d at once, want 4 (burst 5 less one lease-second)", n)
	}
	if _, n := s.Lease(p, now, upstream.ClassVerify, 1); n != 0 {
		t.Fatalf("emptied bucket gave %d more at the same instant", n)
	}
	if w := s.Wait(p, now, upstream.ClassVerify, 1); w != time.Second {
		t.Fatalf("wait for the next token %v, want 1s", w)
	}
	if _, n := s.Lease(p, now.Add(999*time.Millisecond), upstream.ClassVerify, 1); n != 0 {
		t.Fatal("a token before its second was up")
	}
	if _, n := s.Lease(p, now.Add(time.Second), upstream.ClassVerify, 5); n != 1 {
		t.Fatalf("got %d after 1s, want 1", n)
	}
}

// TestBurstHonoured: BRIDGE_API_BURST sets how much an idle bucket gives at once.
func TestBurstHonoured(t *testing.T) {
	for _, tt := range []struct{ burst, want int }{{burst: 5, want: 4}, {burst: 20, want: 19}, {burst: 2, want: 1}} {
		p := NewParams(60, tt.burst)
		_, n := State{At: t0.UnixNano()}.Lease(p, t0.Add(time.Hour), upstream.ClassPoll, 1000)
		if n != tt.want {
			t.Errorf("burst %d: idle bucket gave %d, want %d", tt.burst, n, tt.want)
		}
	}
}

// TestReserveKeptForAcceptedWork: a submission leases only above the reserve; a verification takes the
// last token.
func TestReserveKeptForAcceptedWork(t *testing.T) {
	p := NewParams(60, 5) // capacity 4, reserve 1
	s := State{Level: 3, At: t0.UnixNano()}
	s, n := s.Lease(p, t0, upstream.ClassSubmit, 5)
	if n != 2 {
		t.Fatalf("submission got %d from level 3, want 2 (reserve 1)", n)
	}
	if _, n := s.Lease(p, t0, upstream.ClassSubmit, 1); n != 0 {
		t.Fatal("submission dipped into the reserve")
	}
	if w := s.Wait(p, t0, upstream.ClassSubmit, 1); w != time.Second {
		t.Fatalf("submission wait %v, want 1s (level 1 to 2)", w)
	}
	if _, n := s.Lease(p, t0, upstream.ClassVerify, 5); n != 1 {
		t.Fatalf("verification got %d of the reserve, want 1", n)
	}
}

// TestPauseStopsEveryLeaseAndSlowsTheRate: a 429 empties the bucket, nothing is leased until the
// pause ends, the rate halves, and it recovers by doubling every RecoverEvery.
func TestPauseStopsEveryLeaseAndSlowsTheRate(t *testing.T) {
	p := NewParams(60, 5)
	s := State{Level: 4, At: t0.UnixNano()}
	s, d := s.Pause(p, t0, 3*time.Second)
	if d != 3*time.Second {
		t.Fatalf("pause %v, want the upstream's 3s", d)
	}
	for _, c := range []upstream.Class{upstream.ClassVerify, upstream.ClassPoll, upstream.ClassSubmit} {
		if _, n := s.Lease(p, t0.Add(2999*time.Millisecond), c, 1); n != 0 {
			t.Fatalf("%v leased during the pause", c)
		}
	}
	// Half rate after the pause: 0.5/s, so the first token comes 2s after it ends.
	if _, n := s.Lease(p, t0.Add(4500*time.Millisecond), upstream.ClassVerify, 1); n != 0 {
		t.Fatal("token before 2s at half rate")
	}
	if _, n := s.Lease(p, t0.Add(5*time.Second), upstream.ClassVerify, 1); n != 1 {
		t.Fatal("no token 2s after the pause at half rate")
	}
	// A second 429 while paused is no new evidence: the rate is not halved again.
	s2, _ := s.Pause(p, t0.Add(time.Second), time.Second)
	if s2.Factor != 0.5 || s2.Strikes != 1 {
		t.Fatalf("429 during the pause: factor %v strikes %d, want 0.5 and 1", s2.Factor, s2.Strikes)
	}
	if f := s.factor(t0.Add(RecoverEvery).UnixNano()); f != 1 {
		t.Fatalf("factor %v after RecoverEvery, want 1", f)
	}
	// Without a hint the pause is an own back-off of at most 1s on the first strike.
	_, own := State{At: t0.UnixNano()}.Pause(p, t0, 0)
	if own < 500*time.Millisecond || own > time.Second {
		t.Fatalf("own back-off %v, want 0.5s..1s", own)
	}
}

// TestOwnBackoffCapped: without a header each fresh 429 doubles the own back-off, with jitter down to
// half, and never past 30 s.
func TestOwnBackoffCapped(t *testing.T) {
	p := NewParams(60, 5)
	s := State{At: t0.UnixNano()}
	for i := range 12 {
		s.PausedUntil = 0 // every 429 a fresh one
		var d time.Duration
		s, d = s.Pause(p, t0, 0)
		lo := min(time.Second<<i, 30*time.Second) / 2
		if d < lo || d > 30*time.Second {
			t.Fatalf("strike %d: back-off %v, want in [%v, 30s]", i, d, lo)
		}
	}
}

// TestSkewedClockAddsOnce: a writer whose clock is ahead earns its lead once; a writer behind earns
// nothing until it catches up.
func TestSkewedClockAddsOnce(t *testing.T) {
	p := NewParams(60, 5)
	s := State{Level: 0, At: t0.UnixNano()}
	ahead := t0.Add(2 * time.Second)
	s, n := s.Lease(p, ahead, upstream.ClassVerify, 10)
	if n != 2 {
		t.Fatalf("ahead writer got %d, want 2", n)
	}
	behind := t0.Add(time.Second)
	if _, n := s.Lease(p, behind, upstream.ClassVerify, 10); n != 0 {
		t.Fatalf("behind writer got %d before catching up", n)
	}
}

// TestArithmeticNeverExceedsWindowBound replays a greedy leaser against the bucket on a manual clock,
// every token used at the last instant of its lease, and checks Burst + RPM×W for W in 1s, 10s, 60s.
func TestArithmeticNeverExceedsWindowBound(t *testing.T) {
	const rpm, burst = 60, 5
	p := NewParams(rpm, burst)
	clk := clock.NewFake(t0)
	s := State{Level: p.Capacity, At: t0.UnixNano()}
	var uses []time.Time
	for clk.Now().Before(t0.Add(3 * time.Minute)) {
		var n int
		s, n = s.Lease(p, clk.Now(), upstream.ClassVerify, 1000)
		for range n {
			uses = append(uses, clk.Now().Add(p.LeaseTTL))
		}
		clk.Advance(50 * time.Millisecond)
	}
	for _, w := range []time.Duration{time.Second, 10 * time.Second, time.Minute} {
		limit := burst + int(float64(rpm)/60*w.Seconds())
		for i := range uses {
			in := 0
			for _, u := range uses[i:] {
				if u.Sub(uses[i]) >= w {
					break
				}
				in++
			}
			if in > limit {
				t.Fatalf("%d calls in %v from +%v; limit %d", in, w, uses[i].Sub(t0), limit)
			}
		}
	}
	if len(uses) < 180 {
		t.Fatalf("only %d tokens in 3 minutes at 60/min", len(uses))
	}
}

// TestSuccessesRestoreTheRate: after a 429 halves the rate, eight successes restore it in full, and one
// restores an eighth.
func TestSuccessesRestoreTheRate(t *testing.T) {
	p := NewParams(60, 5)
	s, _ := State{Level: 4, At: t0.UnixNano()}.Pause(p, t0, time.Second)
	if f := s.factor(t0.UnixNano()); f != 0.5 {
		t.Fatalf("factor after a 429 %v, want 0.5", f)
	}
	if f := s.Recovered(t0, 1).factor(t0.UnixNano()); f != 0.625 {
		t.Fatalf("factor after one success %v, want 0.625", f)
	}
	full := s.Recovered(t0, 8)
	if f := full.factor(t0.UnixNano()); f != 1 {
		t.Fatalf("factor after eight successes %v, want 1", f)
	}
	if full.Strikes != 1 {
		t.Fatalf("strikes %d", full.Strikes)
	}
}
