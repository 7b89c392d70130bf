// Package clock is the time source of the upstream budgets: the real clock, and a manual one for tests
// in which time moves only when the test says so.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time and runs functions later.
type Clock interface {
	Now() time.Time
	// At runs f once, on its own goroutine, when the clock reaches t (at once if it has). An instant
	// rather than a duration: a timer armed from a time read a moment earlier cannot be lost to the clock
	// moving in between.
	At(t time.Time, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not run yet, and reports whether it did.
	Stop() bool
}

// Real is the wall clock; Now may be replaced (nil means time.Now). Its timers always run on real time.
type Real struct{ NowFunc func() time.Time }

// Now returns the time.
func (c Real) Now() time.Time {
	if c.NowFunc != nil {
		return c.NowFunc()
	}
	return time.Now()
}

// At is time.AfterFunc until t.
func (c Real) At(t time.Time, f func()) Timer { return time.AfterFunc(t.Sub(c.Now()), f) }

// Fake is a manual clock: time moves only with Advance, which runs the timers that fall due in order,
// each at its own instant. It is safe for concurrent use.
type Fake struct {
	mu     sync.Mutex // mu guards now and timers
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *Fake
	at   time.Time
	f    func()
	done bool // fired or stopped
}

// NewFake returns a manual clock standing at t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the clock's time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// At runs f when the clock is advanced to t or past it, or at once (on its own goroutine) when it
// stands there already.
func (c *Fake) At(at time.Time, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: at, f: f}
	if !at.After(c.now) {
		t.done = true
		go f()
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// Stop implements Timer.
func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

// Advance moves the clock by d, firing every timer that falls due, earliest first, synchronously.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *fakeTimer
		live := c.timers[:0]
		for _, t := range c.timers {
			if t.done {
				continue
			}
			live = append(live, t)
			if !t.at.After(target) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		c.timers = live
		if next == nil {
			c.now = target
			c.mu.Unlock()
			return
		}
		next.done = true
		if next.at.After(c.now) {
			c.now = next.at
		}
		c.mu.Unlock()
		next.f()
	}
}

// Scaled is the wall clock sped up Factor times from Start: a test runs minutes of the upstream's
// windows in seconds when the budget and the simulator share it. Its timers run on real time divided by
// Factor.
type Scaled struct {
	Start  time.Time // the real time the scaled clock starts from (and stands at then)
	Factor float64
}

// NewScaled returns a clock running factor times faster than the wall clock from now on.
func NewScaled(factor float64) Scaled { return Scaled{Start: time.Now(), Factor: factor} }

// Now returns Start plus the real time since Start, times Factor.
func (c Scaled) Now() time.Time {
	return c.Start.Add(time.Duration(float64(time.Since(c.Start)) * c.Factor))
}

// At runs f when the scaled clock reaches t.
func (c Scaled) At(t time.Time, f func()) Timer {
	return time.AfterFunc(time.Duration(float64(t.Sub(c.Now()))/c.Factor), f)
}
