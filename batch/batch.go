// Package batch settles many jobs with one call of the upstream's GET /jobs/export, and holds the one
// policy that says when verification should go that way rather than one GET /job per job.
//
// The export answers, in one call, every job of the account created in a [from, to) window, with its
// status, decision, reason and built-in categories (upstream-api.md §2.7). A job absent from a window that
// covers it did not exist when the window says it must have: it is decided without a call of its own.
//
// # Which window covers a job
//
// The export filters on created_at, which a v1 webhook does not carry, and an unsigned webhook's
// completed_at may be forged. So no window is ever derived from a webhook's body:
//
//   - a job the bridge submitted was created while its submission ran: [OwnWindow] is its record's
//     submitted_at, give or take [Skew];
//   - any other job existed when its webhook reached ingest (the upstream sends the webhook when the job
//     finishes, once, within 10 s), and was created at most the longest a job may run before it
//     (the longest deadline, video's 15 min, plus a margin): [ReceivedWindow] is [received_at − lookback,
//     received_at + Skew]. A forged webhook bearing a real job's id and a false completed_at therefore
//     still finds the real job, and its verification stands in for the real webhook's, as a GET would.
//
// # When batches are faithful
//
// The export has no categories.custom and no error_code. So batches run only while the account has no
// custom categories ([Fidelity]), and a failed row is fetched with GET /job before its result is
// published (the caller's rule; see verify).
package batch

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/evershield/bridge/upstream"
)

// Skew is the leeway of every window: the clocks of the bridge and the upstream may differ, and a
// submission's job is created somewhere between the request and its answer.
const Skew = 2 * time.Minute

// ScarceWithin is the horizon of the scarcity rule: calls are scarce when the verifications owed exceed
// what the budget can grant one by one within it.
const ScarceWithin = 2 * time.Second

// Overloaded is how long after the budget turned a submission away calls count as scarce: demand
// exceeds supply, and every call should serve as many results as it can.
const Overloaded = 10 * time.Second

// DefaultMaxWait is the longest a job waits for its round by default (Config.MaxWait).
const DefaultMaxWait = 20 * time.Second

// Window is a created_at range, from inclusive, to exclusive, as the export takes it.
type Window struct{ From, To time.Time }

// OwnWindow is the window of a job the bridge submitted at submittedAt (its JOBS record).
func OwnWindow(submittedAt time.Time) Window {
	return Window{From: submittedAt.Add(-Skew), To: submittedAt.Add(Skew)}
}

// ReceivedWindow is the window of a job the bridge has no record of, whose webhook ingest received at
// receivedAt: it existed then, and was created at most lookback before.
func ReceivedWindow(receivedAt time.Time, lookback time.Duration) Window {
	return Window{From: receivedAt.Add(-lookback - Skew), To: receivedAt.Add(Skew)}
}

// Covers reports whether created lies in w.
func (w Window) Covers(created time.Time) bool {
	return !created.Before(w.From) && created.Before(w.To)
}

// Scarce is the policy: verification goes in batches when the owed verifications (this one included)
// exceed what the budget can grant one by one within ScarceWithin. capacity is the budget's
// (budget.Shared.Capacity).
func Scarce(owed int, capacity func(time.Duration) float64) bool {
	return float64(owed) > capacity(ScarceWithin)
}

// Cost is what verifying owed jobs costs the budget, for admission: one GET each while that is cheaper,
// else a call per round of min jobs (a round is never smaller: see Config.Min), and one more for the
// round in progress.
func Cost(owed, min int) float64 {
	if min <= 1 {
		return float64(owed)
	}
	return math.Min(float64(owed), math.Ceil(float64(owed)/float64(min))+1)
}

// Source is the part of the upstream client a batch calls (*upstream.Client).
type Source interface {
	ExportJobs(ctx context.Context, from, to time.Time, each func(upstream.Job) error) error
}

// Config configures a [Batcher]. Source is required.
type Config struct {
	Source Source
	// Min is how many jobs a round waits for before it starts; default 15.
	Min int
	// MaxWait is the longest a job waits for its round to start, however few wait; default 20s: under
	// overload at 60 calls a minute about a submission a second finishes, and a round then settles some
	// fifteen of them, so that the account's calls yield 0.85 results or more.
	MaxWait time.Duration
	// Gate, when set, is waited on before each round's call (the unknown-job budget's token).
	Gate func(ctx context.Context) error
	// MaxSpan is the longest window of one call; jobs whose windows lie further apart are settled by a call
	// each. Default 1h.
	MaxSpan time.Duration
	// Timeout bounds one round; default 2m.
	Timeout time.Duration
	// Calls counts the export calls, when set.
	Calls func()
}

// ErrNoRound: the round's Gate did not open (its budget had no call in time); the export itself was not
// asked, so this says nothing of whether it works.
var ErrNoRound = errors.New("batch: no call for the round")

// Answer is what a round found about one job: the export's row (Found), or its absence from a window that
// covers the job.
type Answer struct {
	Job   upstream.Job
	Found bool
}

// Batcher gathers lookups into rounds of one export call (or a few, see Config.MaxSpan). It is safe for
// concurrent use; it runs a goroutine only while lookups wait.
type Batcher struct {
	cfg Config

	mu      sync.Mutex // mu guards the fields below
	waiting map[string]*lookup
	oldest  time.Time
	running bool
	more    chan struct{} // a lookup arrived
}

type lookup struct {
	win     Window
	answers []chan result
}

type result struct {
	a   Answer
	err error
}

// New returns a Batcher.
func New(cfg Config) (*Batcher, error) {
	if cfg.Source == nil {
		return nil, errors.New("batch: Source is required")
	}
	if cfg.Min <= 0 {
		cfg.Min = 15
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxSpan <= 0 {
		cfg.MaxSpan = time.Hour
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	return &Batcher{cfg: cfg, waiting: map[string]*lookup{}, more: make(chan struct{}, 1)}, nil
}

// Min is the size of a full round.
func (b *Batcher) Min() int { return b.cfg.Min }

// Lookup settles id, whose job lies in win, in the next round, and waits for it or for ctx.
func (b *Batcher) Lookup(ctx context.Context, id string, win Window) (Answer, error) {
	ch := make(chan result, 1)
	b.mu.Lock()
	l := b.waiting[id]
	if l == nil {
		l = &lookup{win: win}
		b.waiting[id] = l
	} else {
		l.win = Window{From: minTime(l.win.From, win.From), To: maxTime(l.win.To, win.To)}
	}
	l.answers = append(l.answers, ch)
	if len(b.waiting) == 1 {
		b.oldest = time.Now()
	}
	if !b.running {
		b.running = true
		go b.rounds()
	}
	b.mu.Unlock()
	select {
	case b.more <- struct{}{}:
	default:
	}
	select {
	case r := <-ch:
		return r.a, r.err
	case <-ctx.Done():
		return Answer{}, ctx.Err()
	}
}

// rounds runs rounds while lookups wait: each starts once Min wait or the oldest has waited MaxWait.
func (b *Batcher) rounds() {
	for {
		b.mu.Lock()
		n, due := len(b.waiting), b.oldest.Add(b.cfg.MaxWait)
		if n == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		if wait := time.Until(due); n < b.cfg.Min && wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-b.more:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		b.round()
	}
}

// round takes every waiting lookup, calls the export over their windows, and answers each.
func (b *Batcher) round() {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	if b.cfg.Gate != nil {
		if err := b.cfg.Gate(ctx); err != nil {
			b.answerAll(b.take(), result{err: fmt.Errorf("%w: %w", ErrNoRound, err)})
			return
		}
	}
	serve := b.take()
	found := make(map[string]upstream.Job, len(serve))
	var err error
	for _, w := range spans(serve, b.cfg.MaxSpan) {
		if b.cfg.Calls != nil {
			b.cfg.Calls()
		}
		err = b.cfg.Source.ExportJobs(ctx, w.From, w.To, func(j upstream.Job) error {
			if _, ok := serve[j.JobID]; ok {
				found[j.JobID] = j
			}
			return nil
		})
		if err != nil {
			break
		}
	}
	for id, l := range serve {
		r := result{err: err}
		if j, ok := found[id]; ok {
			r = result{a: Answer{Job: j, Found: true}}
		} else if err == nil {
			r = result{a: Answer{}}
		}
		for _, ch := range l.answers {
			ch <- r
		}
	}
}

// take empties the waiting set and returns it.
func (b *Batcher) take() map[string]*lookup {
	b.mu.Lock()
	defer b.mu.Unlock()
	serve := b.waiting
	b.waiting = map[string]*lookup{}
	b.oldest = time.Now()
	return serve
}

func (b *Batcher) answerAll(serve map[string]*lookup, r result) {
	for _, l := range serve {
		for _, ch := range l.answers {
			ch <- r
		}
	}
}

// spans merges the lookups' windows into as few export windows as cover them all, none longer than
// maxSpan unless a single job's window is.
func spans(serve map[string]*lookup, maxSpan time.Duration) []Window {
	ws := make([]Window, 0, len(serve))
	for _, l := range serve {
		ws = append(ws, l.win)
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].From.Before(ws[j].From) })
	var out []Window
	for _, w := range ws {
		// Overlapping or not, one call covers both while the union stays within maxSpan: cheaper than two.
		if n := len(out); n > 0 && maxTime(out[n-1].To, w.To).Sub(out[n-1].From) <= maxSpan {
			out[n-1].To = maxTime(out[n-1].To, w.To)
			continue
		}
		out = append(out, w)
	}
	return slices.Clip(out)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
