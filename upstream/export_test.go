package upstream

import (
	"time"

	"github.com/evershield/bridge/internal/clock"
)

// FakeClock is the manual clock of the budget tests.
type FakeClock = clock.Fake

// NewFakeClock returns a clock standing at t.
func NewFakeClock(t time.Time) *FakeClock { return clock.NewFake(t) }

// UseClock makes a client built from cfg run its budget on c.
func UseClock(cfg *Config, c *FakeClock) { cfg.clock = c; cfg.Now = c.Now }

// Queued returns the number of calls waiting for budget.
func (c *Client) Queued() int {
	n := 0
	for _, q := range c.limiter.(*budget).queued() {
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
