package budget

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/upstream"
)

// Tuning of the shared bucket.
const (
	// MaxLeaseTTL is the longest a leased token stays usable.
	MaxLeaseTTL = time.Second
	// RecoverEvery is how long the rate takes to double back after a 429 slowed it.
	RecoverEvery = 30 * time.Second
	minFactor    = 1.0 / 16 // the rate never drops below 1/16 of RPM
	backoffBase  = time.Second
	backoffCap   = 30 * time.Second // own back-off, when the upstream gave no header
	maxPause     = 5 * time.Minute  // sanity cap on the upstream's headers
	strikeMemory = time.Minute      // consecutive 429s further apart than this start the back-off afresh
)

// State is the shared bucket as stored in BRIDGE_BUDGET. Times are Unix nanoseconds of the writers'
// clocks.
type State struct {
	// Level is the number of tokens in the bucket at At.
	Level float64 `json:"level"`
	// At only moves forward (see the package doc on clocks).
	At int64 `json:"at"`
	// PausedUntil is the end of a 429 pause; nothing is leased before it.
	PausedUntil int64 `json:"paused_until,omitempty"`
	// Factor is the fraction of the rate in force at StrikeAt after 429s; 0 means 1 (full rate).
	Factor   float64 `json:"factor,omitempty"`
	StrikeAt int64   `json:"strike_at,omitempty"`
	Strikes  int     `json:"strikes,omitempty"`
	// RPM and Writer are the limit and the process of the last write, for operators. With Learned, RPM
	// is the account's limit as the upstream's x-ratelimit-limit said (BRIDGE_API_RPM=auto), and every
	// auto process runs the bucket at it.
	RPM     int    `json:"rpm"`
	Writer  string `json:"writer,omitempty"`
	Learned bool   `json:"learned,omitempty"`
	// WindowEnd and WindowLeft are the upstream's own window as its headers last told (auto only): until
	// WindowEnd (Unix ns) at most WindowLeft more calls may start, whatever the bucket holds. Zero
	// WindowEnd: no window known.
	WindowEnd  int64 `json:"window_end,omitempty"`
	WindowLeft int   `json:"window_left,omitempty"`
	// Leased counts every token ever leased, for operators (a rate over two reads is the use).
	Leased uint64 `json:"leased"`
}

// Params are the arithmetic of one budget, derived from RPM and Burst by [NewParams].
type Params struct {
	RPM   int
	Burst int
	// Rate is RPM in tokens per second.
	Rate float64
	// LeaseTTL is how long a leased token may wait for its call.
	LeaseTTL time.Duration
	// Capacity is the bucket size: Burst less what leases may still spend after they are granted.
	Capacity float64
	// Reserve is kept for accepted work: a submission leases only while more than Reserve is left.
	Reserve float64
}

// NewParams derives the bucket from the account limit. Burst 0 means five seconds' worth of RPM.
func NewParams(rpm, burst int) Params {
	if burst <= 0 {
		burst = max(1, rpm/12)
	}
	p := Params{RPM: rpm, Burst: burst, Rate: float64(rpm) / 60}
	// A token may be used up to LeaseTTL after the bucket gave it, so a window W sees at most the tokens
	// given over W+LeaseTTL: Capacity + Rate×(W+LeaseTTL) = Burst + Rate×W when Capacity is Burst less
	// Rate×LeaseTTL. Keep at least one token of capacity by shortening the lease.
	p.LeaseTTL = MaxLeaseTTL
	if spare := float64(burst) - 1; p.Rate*p.LeaseTTL.Seconds() > spare {
		p.LeaseTTL = time.Duration(spare / p.Rate * float64(time.Second))
	}
	p.Capacity = max(1, float64(burst)-p.Rate*p.LeaseTTL.Seconds())
	// One token of reserve orders the classes across processes: accepted work anywhere takes a token as
	// soon as the bucket holds one, so while it waits the level stays below two and submissions find
	// nothing; when it stops waiting the level passes the reserve within a token's time.
	p.Reserve = min(1, p.Capacity-1)
	return p
}

// threshold is the level a class must leave in the bucket.
func (p Params) threshold(c upstream.Class) float64 {
	if c == upstream.ClassSubmit {
		return p.Reserve
	}
	return 0
}

// windowCap is how many calls the upstream's window still allows at now for class, and whether a window
// is known at all.
func (s State) windowCap(p Params, now int64, class upstream.Class) (float64, bool) {
	if s.WindowEnd <= now {
		return 0, false
	}
	return float64(s.WindowLeft) - p.threshold(class), true
}

// factor is the fraction of the rate in force at now.
func (s State) factor(now int64) float64 {
	if s.Factor <= 0 || s.Factor >= 1 {
		return 1
	}
	doublings := float64(now-s.StrikeAt) / float64(RecoverEvery)
	if doublings <= 0 {
		return s.Factor
	}
	return min(1, s.Factor*math.Exp2(doublings))
}

// rate is the tokens per second in force at now.
func (s State) rate(p Params, now int64) float64 { return p.Rate * s.factor(now) }

// Refilled is the state at now: the level grown by the rate since At (at the rate in force at At, which
// only ever understates it while the rate recovers), capped at Capacity.
func (s State) Refilled(p Params, now time.Time) State {
	t := now.UnixNano()
	if t <= s.At {
		return s
	}
	from := max(s.At, s.PausedUntil)
	if t > from {
		s.Level = min(p.Capacity, s.Level+float64(t-from)/float64(time.Second)*s.rate(p, from))
	}
	s.At = t
	return s
}

// Paused reports whether the bucket is paused at now.
func (s State) Paused(now time.Time) bool { return now.UnixNano() < s.PausedUntil }

// Lease takes up to want tokens for a call of class at now, never leaving less than the class's
// threshold, and returns the new state and how many it took (0 while paused or short).
func (s State) Lease(p Params, now time.Time, class upstream.Class, want int) (State, int) {
	s = s.Refilled(p, now)
	if want <= 0 || s.Paused(now) {
		return s, 0
	}
	n := min(want, int(math.Floor(s.Level-p.threshold(class))))
	if left, ok := s.windowCap(p, now.UnixNano(), class); ok {
		n = min(n, int(math.Floor(left)))
		if n > 0 {
			s.WindowLeft -= n
		}
	}
	if n <= 0 {
		return s, 0
	}
	s.Level -= float64(n)
	s.Leased += uint64(n)
	return s, n
}

// Wait is how long from now until want tokens could be leased for class; a long time (an hour) when the
// bucket can never hold that many above the class's threshold.
func (s State) Wait(p Params, now time.Time, class upstream.Class, want int) time.Duration {
	s = s.Refilled(p, now)
	var wait time.Duration
	if s.Paused(now) {
		wait = time.Duration(s.PausedUntil - now.UnixNano())
	}
	need := p.threshold(class) + float64(want)
	if need > p.Capacity {
		return time.Hour
	}
	if left, ok := s.windowCap(p, now.UnixNano(), class); ok && left < float64(want) {
		// The upstream's window is spent: nothing before it resets (the bucket refills meanwhile).
		wait = max(wait, time.Duration(s.WindowEnd-now.UnixNano()))
		if s.Refilled(p, time.Unix(0, s.WindowEnd)).Level >= need {
			return wait
		}
		now = time.Unix(0, s.WindowEnd)
		s = s.Refilled(p, now)
	}
	deficit := need - s.Level
	if deficit <= 0 {
		return wait
	}
	from := max(now.UnixNano(), s.PausedUntil)
	return wait + time.Duration(math.Ceil(deficit/s.rate(p, from)*float64(time.Second)))
}

// Capacity is how many tokens the bucket can give over the next d: its level now plus the refill.
func (s State) Capacity(p Params, now time.Time, d time.Duration) float64 {
	s = s.Refilled(p, now)
	run := d
	if s.Paused(now) {
		run -= time.Duration(s.PausedUntil - now.UnixNano())
	}
	c := max(0, s.Level) + max(0, run.Seconds())*s.rate(p, now.UnixNano())
	if left, ok := s.windowCap(p, now.UnixNano(), upstream.ClassVerify); ok && time.Duration(s.WindowEnd-now.UnixNano()) >= d {
		c = min(c, max(0, left))
	}
	return c
}

// Recovered restores the rate after n answers that were not 429s, an eighth of the full rate each: a
// 429 halves the rate and a run of successes brings it back, so a passing 429 costs little while a real
// limit keeps it low.
func (s State) Recovered(now time.Time, n int) State {
	if n <= 0 || s.Factor <= 0 || s.Factor >= 1 {
		return s
	}
	t := now.UnixNano()
	f := min(1, s.factor(t)+float64(n)/8)
	if f >= 1 {
		s.Factor, s.StrikeAt = 0, 0
		return s
	}
	s.Factor, s.StrikeAt = f, t
	return s
}

// Pause applies a 429 at now: the bucket pauses for hint (or, without one, an own back-off with
// jitter), empties, and halves its rate unless it was paused already (answers to calls in flight when
// the first 429 came are no new evidence). It returns the new state and the pause.
func (s State) Pause(p Params, now time.Time, hint time.Duration) (State, time.Duration) {
	s = s.Refilled(p, now)
	t := now.UnixNano()
	if t-s.StrikeAt > int64(strikeMemory) {
		s.Strikes = 0
	}
	d := min(hint, maxPause)
	if d <= 0 {
		d = retry.Exp(s.Strikes+1, backoffBase, backoffCap)
		d = time.Duration(float64(d) * (0.5 + rand.Float64()/2))
	}
	if !s.Paused(now) {
		s.Factor = max(s.factor(t)/2, minFactor)
		s.StrikeAt = t
		s.Strikes++
	}
	if until := t + int64(d); until > s.PausedUntil {
		s.PausedUntil = until
	}
	// After the pause the bucket refills from empty, at the lowered rate.
	s.Level = min(s.Level, 0)
	return s, d
}
