package verify

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/upstream"
)

// listCheck establishes the provenance of webhooks of jobs the bridge has no record of by finding their
// ids in the account's own job list (GET /jobs), in rounds that serve many ids at once. The list cannot
// be asked for a set of ids (search takes one prefix), so a round pages the recent window of finished
// jobs, newest first, each page once, and settles every waiting id that appears on it; it stops when
// every id it serves is settled or the window is exhausted. Ids that arrive during a round wait for the
// next one, so no id is declared missing because its page went by before it came. Each page spends an
// unknown-job token, so a flood of forged ids costs at most the unknown-job budget in pages, whatever
// its size, on top of the GETs it is allowed.
type listCheck struct {
	api    API
	budget *unknownTokens
	// lookback is how long before the oldest waiting webhook a job may have been created: the longest
	// deadline plus a margin (a job's webhook comes when it finishes).
	lookback time.Duration
	// missing remembers ids a whole round did not find, so a parked webhook that comes back does not pay
	// for another round.
	missing *recentSet
	pages   prometheus.Counter

	mu      sync.Mutex // mu guards the fields below
	waiting map[string][]chan listAnswer
	oldest  time.Time
	running bool
}

type listAnswer struct {
	found bool
	err   error
}

// maxListPages bounds one round: 50 pages are 5,000 finished jobs in the window.
const maxListPages = 50

func newListCheck(api API, budget *unknownTokens, lookback time.Duration, pages prometheus.Counter) *listCheck {
	return &listCheck{api: api, budget: budget, lookback: lookback, pages: pages,
		missing: newRecentSet(65536, 10*time.Minute), waiting: map[string][]chan listAnswer{}}
}

// found reports whether id is in the account's list of recently finished jobs. receivedAt is when its
// webhook came. It waits for the round that serves it, or until ctx ends.
func (c *listCheck) found(ctx context.Context, id string, receivedAt time.Time) (bool, error) {
	if c.missing.Has(id) {
		return false, nil
	}
	ch := make(chan listAnswer, 1)
	c.mu.Lock()
	c.waiting[id] = append(c.waiting[id], ch)
	if c.oldest.IsZero() || receivedAt.Before(c.oldest) {
		c.oldest = receivedAt
	}
	if !c.running {
		c.running = true
		go c.rounds()
	}
	c.mu.Unlock()
	select {
	case a := <-ch:
		return a.found, a.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// listGather is how long a round waits for more ids before it starts: a burst of webhooks shares pages.
const listGather = 200 * time.Millisecond

// rounds runs rounds while ids wait.
func (c *listCheck) rounds() {
	for {
		<-time.After(listGather)
		c.mu.Lock()
		serve, oldest := c.waiting, c.oldest
		c.waiting, c.oldest = map[string][]chan listAnswer{}, time.Time{}
		if len(serve) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.round(serve, oldest)
	}
}

// round pages the window for the ids in serve and answers each of them.
func (c *listCheck) round(serve map[string][]chan listAnswer, oldest time.Time) {
	answer := func(id string, a listAnswer) {
		for _, ch := range serve[id] {
			ch <- a
		}
		delete(serve, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := upstream.ListFilter{Status: []string{upstream.StatusCompleted, upstream.StatusFailed},
		From: oldest.Add(-c.lookback), Limit: upstream.InFlightPage}
	for page := 0; len(serve) > 0; page++ {
		var err error
		if page >= maxListPages {
			err = errors.New("job list window longer than the round allows")
		} else if err = c.budget.wait(ctx); err == nil {
			var l upstream.JobList
			if l, err = c.api.ListJobs(ctx, f); err == nil {
				c.pages.Inc()
				for _, j := range l.Jobs {
					if _, ok := serve[j.JobID]; ok {
						answer(j.JobID, listAnswer{found: true})
					}
				}
				if len(l.Jobs) < f.Limit {
					break // the window is exhausted: the rest are not in it
				}
				f.Offset += len(l.Jobs)
				continue
			}
		}
		for id := range serve {
			answer(id, listAnswer{err: err})
		}
		return
	}
	for id := range serve {
		c.missing.Add(id)
		answer(id, listAnswer{})
	}
}
