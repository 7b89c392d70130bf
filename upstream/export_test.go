package upstream

import (
	"sync"
	"time"
)

// FakeClock is a manual clock for the budget: time moves only with Advance, which runs due timers in
// order, each at its own instant.
type FakeClock struct {
	mu     sync.Mutex // mu guards now and timers
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *FakeClock
	at   time.Time
	f    func()
	done bool // fired or stopped
}

// NewFakeClock returns a clock standing at t.
func NewFakeClock(t time.Time) *FakeClock { return &FakeClock{now: t} }

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc runs f when the clock is advanced past now+d.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

// Advance moves the clock by d, firing every timer that falls due, earliest first.
func (c *FakeClock) Advance(d time.Duration) {
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

// UseClock makes a client built from cfg run its budget on c.
func UseClock(cfg *Config, c *FakeClock) { cfg.clock = c; cfg.Now = c.Now }

// Queued returns the number of calls waiting for budget.
func (c *Client) Queued() int {
	n := 0
	for _, q := range c.budget.queued() {
		n += q
	}
	return n
}

// queued is the number of waiting calls per class.
func (b *budget) queued() (n [numClasses]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.queues {
		n[c] = b.queues[c].Len()
	}
	return n
}
