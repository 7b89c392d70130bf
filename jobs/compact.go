package jobs

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/history"
	"github.com/evershield/bridge/internal/promutil"
	"github.com/evershield/bridge/natsx"
)

// DefaultCompactBatch is the most jobs one compaction round moves into the history by default.
const DefaultCompactBatch = 1000

// Failpoints of a compaction round ([CompactorConfig.Failpoint]): the points where a crash leaves a round
// half done.
const (
	// CompactAfterHistory: the ids of the round are in the history, and nothing of them is removed yet.
	// The id passed is the round's first (oldest) job.
	CompactAfterHistory Failpoint = "compact-after-history"
	// CompactAfterRemove: one job of the round has lost its JOBS key and fences, and the round has more
	// jobs to remove. The id passed is the job just removed. A round of one job does not reach it.
	CompactAfterRemove Failpoint = "compact-after-remove"
)

// Archive is where compacted jobs go: the history of delivered jobs. *history.Store satisfies it.
type Archive interface {
	// Add records every entry as delivered; when it returns nil, every later lookup finds them.
	Add(ctx context.Context, entries []history.Entry) error
}

// CompactorConfig configures a [Compactor]. Watcher, Jobs, Results and Archive are required.
type CompactorConfig struct {
	// Watcher is the process's JOBS watcher: the compactor learns the delivered jobs from it.
	Watcher *Watcher
	// Jobs is the stream under the JOBS bucket (KV_JOBS), whose key subjects the compactor purges.
	Jobs jetstream.Stream
	// Results is RESULTS, whose fence subjects the compactor purges.
	Results jetstream.Stream
	// Idempotency is the stream under BRIDGE_IDEMPOTENCY, whose Idempotency-Key entries of compacted jobs
	// the compactor purges (their keys go into the history with the jobs); nil leaves them to the
	// bucket's TTL.
	Idempotency jetstream.Stream
	// Archive is the history the compacted ids go to first.
	Archive Archive
	// Window is the duplicate window (BRIDGE_DUPLICATE_WINDOW): a job delivered within it stays hot.
	Window time.Duration
	// LateWatch is how long a timed-out job is watched for a late result after its timeout (the
	// reconciler's LateWatch): it stays hot that long and then the window, unless its late result comes.
	LateWatch time.Duration
	// Batch is the most jobs a round moves. Default [DefaultCompactBatch].
	Batch int
	// Log receives the compactor's events, tagged component=compact.
	Log zerolog.Logger
	// Metrics registers the bridge_compact_* collectors; nil registers nothing.
	Metrics prometheus.Registerer
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Names are the bridge's names (its namespace's), for the fence subjects; the zero Names means
	// contract.Default.
	Names contract.Names
	// Failpoint is for tests only (the crash suite, through the binary's BRIDGE_TEST_FAILPOINT): when set,
	// it is called at each compaction [Failpoint] (CompactAfterHistory, CompactAfterRemove) of every round,
	// and may block there; a deployment never sets it.
	Failpoint func(point Failpoint, id string)
}

// Compactor moves delivered jobs from the hot state (a JOBS key and the result fences bridge.result.<id>
// and .late, one subject each) into the history, once their delivery is older than the duplicate window
// and a margin. It keeps, from the JOBS watch, the delivered records and their delivery times: about the
// duplicate window's worth of deliveries. Only one process should run rounds at a time (the reconciler's
// lease holder), though two at once lose and double nothing. See docs/DESIGN.md, History.
type Compactor struct {
	cfg    CompactorConfig
	log    zerolog.Logger
	m      compactMetrics
	margin time.Duration

	// open is set once JOBS is at contract.LayoutHistory: before that, rounds are held (see Round).
	open atomic.Bool
	// held is set once the held layout was logged.
	held atomic.Bool

	mu   sync.Mutex // mu guards done
	done map[string]delivered
	// afterAdd, when set (tests), is called after the ids of a round are in the history and before
	// anything is removed; an error stops the round there, as a crash would.
	afterAdd func() error
}

// delivered is a delivered record as the watch last fed it: its revision, when it may leave the hot
// state (less the window), what the history keeps of it and, for a job submitted with an
// Idempotency-Key, of its key (keyHash names the key's entry in BRIDGE_IDEMPOTENCY).
type delivered struct {
	rev     uint64
	at      time.Time
	entry   history.Entry
	keyHash string
	key     history.Entry
}

type compactMetrics struct {
	jobs   prometheus.Counter
	rounds *prometheus.CounterVec
}

// NewCompactor checks cfg and subscribes the compactor to cfg.Watcher; call it before the watcher runs.
func NewCompactor(cfg CompactorConfig) (*Compactor, error) {
	if cfg.Batch == 0 {
		cfg.Batch = DefaultCompactBatch
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Names = cfg.Names.OrDefault()
	switch {
	case cfg.Watcher == nil || cfg.Jobs == nil || cfg.Results == nil || cfg.Archive == nil:
		return nil, fmt.Errorf("%w: compactor: Watcher, Jobs, Results and Archive are required", ErrInvalidConfig)
	case cfg.Window <= 0 || cfg.LateWatch < 0:
		return nil, fmt.Errorf("%w: compactor: Window %v, LateWatch %v: must be positive", ErrInvalidConfig, cfg.Window, cfg.LateWatch)
	case cfg.Batch < 1:
		return nil, fmt.Errorf("%w: compactor: Batch %d: must be positive", ErrInvalidConfig, cfg.Batch)
	}
	m, err := newCompactMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("compactor: %w", err)
	}
	// The margin covers the clocks of the replicas that stamped the delivery times against this one.
	c := &Compactor{cfg: cfg, m: m, margin: min(cfg.Window/10, time.Minute), done: map[string]delivered{},
		log: cfg.Log.With().Str("component", "compact").Logger()}
	cfg.Watcher.Subscribe(c.follow)
	return c, nil
}

func newCompactMetrics(reg prometheus.Registerer) (compactMetrics, error) {
	const ns, sub = "bridge", "compact"
	m := compactMetrics{
		jobs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "jobs_total",
			Help: "Delivered jobs moved from JOBS and their result fences into the history."}),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rounds_total",
			Help: "Compaction rounds by result: ok (something compacted), idle (nothing due), held (JOBS at the earlier layout, until bridge upgrade finalize), error."},
			[]string{"result"}),
	}
	for _, r := range []string{"ok", "idle", "held", "error"} {
		m.rounds.WithLabelValues(r)
	}
	r := promutil.NewRegistrar(reg)
	m.jobs, m.rounds = promutil.Add(r, m.jobs), promutil.Add(r, m.rounds)
	return m, r.Err()
}

// follow keeps the delivered records from the watch; a replay starts from empty.
func (c *Compactor) follow(u Update) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch u.Kind {
	case UpdateReplay:
		clear(c.done)
	case UpdateRecord:
		delete(c.done, u.Key)
		if u.Deleted {
			return
		}
		rec, err := Decode(u.Value)
		if err != nil {
			return
		}
		if at, ok := c.hotUntil(rec); ok {
			d := delivered{rev: u.Revision, at: at, entry: rec.HistoryEntry()}
			if key, ok := rec.KeyHistoryEntry(); ok {
				d.keyHash, d.key = rec.KeyHash(), key
			}
			c.done[u.Key] = d
		}
	}
}

// hotUntil is when a record whose result is out stops needing its own subjects, less the duplicate window
// and margin: its delivery (of the late result, for a timed-out job that got one); for a timed-out job
// still without one, the end of its late watch. A late webhook after that is answered from the history as
// delivered, and its late result is not published. ok is false for a job still pending.
func (c *Compactor) hotUntil(rec Record) (at time.Time, ok bool) {
	switch {
	case rec.LateDeliveredAt != nil:
		return *rec.LateDeliveredAt, rec.ResultOut()
	case rec.State == StateTimedOut && rec.DeliveredAt != nil:
		return rec.DeliveredAt.Add(c.cfg.LateWatch), true
	case rec.ResultOut() && rec.DeliveredAt != nil:
		return *rec.DeliveredAt, true
	}
	return time.Time{}, false
}

// Held is the number of delivered jobs the compactor holds, due or not.
func (c *Compactor) Held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.done)
}

// layoutOpen reports whether JOBS is at the layout that compacts, reading it until it is (one stream info a
// round); a layout is never lowered, so once open it stays so.
func (c *Compactor) layoutOpen(ctx context.Context) (bool, error) {
	if c.open.Load() {
		return true, nil
	}
	layout, err := natsx.JobsLayout(ctx, c.cfg.Jobs)
	if err != nil {
		return false, fmt.Errorf("compact: layout: %w", err)
	}
	if layout < contract.LayoutHistory {
		if c.held.CompareAndSwap(false, true) {
			c.log.Warn().Int("layout", layout).Msg("JOBS is at the earlier layout: delivered jobs stay in JOBS as tombstones until 'bridge upgrade finalize' (docs/OPERATIONS.md, Upgrade)")
		}
		return false, nil
	}
	c.open.Store(true)
	c.log.Info().Int("layout", layout).Msg("compaction on: delivered jobs move into the history once their duplicate window has passed")
	return true, nil
}

// dueJob is one job of a round: its id and the delivered record read.
type dueJob struct {
	id string
	delivered
}

// due returns up to Batch jobs delivered longer ago than the window and the margin, oldest first.
func (c *Compactor) due(now time.Time) []dueJob {
	cut := now.Add(-c.cfg.Window - c.margin)
	c.mu.Lock()
	var out []dueJob
	for id, d := range c.done {
		if d.at.Before(cut) {
			out = append(out, dueJob{id, d})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b dueJob) int { return a.at.Compare(b.at) })
	return out[:min(len(out), c.cfg.Batch)]
}

// Round compacts up to Batch due jobs and returns how many it compacted. First every id goes into the
// history, and with it the Idempotency-Key of each job submitted with one; then, job by job, its key's
// entry in BRIDGE_IDEMPOTENCY is purged, its JOBS key is purged up to the revision read (a newer write
// survives) and its fences are purged. Stopped at any point, nothing is lost (the ids are in the history before
// anything is removed) and the next round redoes what is left (every step can be done twice).
//
// Until JOBS is at [contract.LayoutHistory] (after bridge upgrade finalize, on a store of the earlier
// release) a round is held: it compacts nothing, for a process of the earlier release reads no history.
func (c *Compactor) Round(ctx context.Context) (int, error) {
	if open, err := c.layoutOpen(ctx); err != nil || !open {
		result := "held"
		if err != nil {
			result = "error"
		}
		c.m.rounds.WithLabelValues(result).Inc()
		return 0, err
	}
	due := c.due(c.cfg.Now())
	if len(due) == 0 {
		c.m.rounds.WithLabelValues("idle").Inc()
		return 0, nil
	}
	n, err := c.compact(ctx, due)
	c.m.jobs.Add(float64(n))
	if err != nil {
		c.m.rounds.WithLabelValues("error").Inc()
		return n, err
	}
	c.m.rounds.WithLabelValues("ok").Inc()
	return n, nil
}

func (c *Compactor) compact(ctx context.Context, due []dueJob) (int, error) {
	entries := make([]history.Entry, 0, len(due))
	for _, d := range due {
		entries = append(entries, d.entry)
		if d.keyHash != "" {
			entries = append(entries, d.key)
		}
	}
	if err := c.cfg.Archive.Add(ctx, entries); err != nil {
		return 0, fmt.Errorf("compact: %w", err)
	}
	if c.afterAdd != nil {
		if err := c.afterAdd(); err != nil {
			return 0, fmt.Errorf("compact: %w", err)
		}
	}
	c.failpoint(CompactAfterHistory, due[0].id)
	hot := HotState{Jobs: c.cfg.Jobs, Results: c.cfg.Results, Idempotency: c.cfg.Idempotency, Names: c.cfg.Names}
	for i, d := range due {
		// The key's entry before the record: while the record is there, a round after a crash redoes both.
		if err := hot.RemoveKey(ctx, d.keyHash); err != nil {
			return i, err
		}
		if err := hot.Remove(ctx, d.id, d.rev); err != nil {
			return i, err
		}
		c.forget(d)
		if i < len(due)-1 {
			c.failpoint(CompactAfterRemove, d.id)
		}
	}
	return len(due), nil
}

// failpoint calls the configured test failpoint, if any.
func (c *Compactor) failpoint(p Failpoint, id string) {
	if c.cfg.Failpoint != nil {
		c.cfg.Failpoint(p, id)
	}
}

// HotState is where a job's per-job subjects live: its JOBS key in the bucket's stream (KV_JOBS), its
// result fences in RESULTS, and its Idempotency-Key's entry in BRIDGE_IDEMPOTENCY's stream.
type HotState struct {
	Jobs, Results jetstream.Stream
	// Idempotency is the stream under BRIDGE_IDEMPOTENCY (KV_BRIDGE_IDEMPOTENCY); nil leaves the keys'
	// entries to the bucket's TTL.
	Idempotency jetstream.Stream
	// Names are the bridge's names, for the fence subjects; the zero Names means contract.Default.
	Names contract.Names
}

// Remove purges job id's JOBS key up to its revision rev, and then its fences: the compactor's removal,
// once the id is in the history. The KV key is purged from the bucket's stream, not deleted
// ([natsx.PurgeKey]). The purge keeps every message after rev, so a record written since it was read
// stays, and there is no race between a check and the removal.
func (h HotState) Remove(ctx context.Context, id string, rev uint64) error {
	names := h.Names.OrDefault()
	if err := natsx.PurgeKey(ctx, h.Jobs, id, rev); err != nil {
		return fmt.Errorf("compact %s: purge record: %w", id, err)
	}
	for _, late := range []bool{false, true} {
		if err := h.Results.Purge(ctx, jetstream.WithPurgeSubject(names.ResultFenceSubject(id, late))); err != nil {
			return fmt.Errorf("compact %s: purge fence: %w", id, err)
		}
	}
	return nil
}

// RemoveKey purges the entry of an Idempotency-Key (its [contract.IdempotencyKeyHash]) from
// BRIDGE_IDEMPOTENCY, once the key is in the history: the compactor's removal of a compacted job's key,
// before its record's. Without an Idempotency stream it does nothing.
func (h HotState) RemoveKey(ctx context.Context, hash string) error {
	if h.Idempotency == nil || hash == "" {
		return nil
	}
	if err := natsx.PurgeKey(ctx, h.Idempotency, hash, 0); err != nil {
		return fmt.Errorf("compact: purge idempotency key %s: %w", hash, err)
	}
	return nil
}

// forget drops a compacted job, unless the watch fed a newer revision of it meanwhile.
func (c *Compactor) forget(d dueJob) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done[d.id].rev == d.rev {
		delete(c.done, d.id)
	}
}

// Run runs a round every period until ctx ends; a round that compacted a full batch is followed by the
// next at once. Errors are logged and counted, and the next round retries.
func (c *Compactor) Run(ctx context.Context, period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		n, err := c.Round(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Warn().Err(err).Int("compacted", n).Msg("compaction round failed; the next round redoes it")
		case n > 0:
			c.log.Info().Int("compacted", n).Msg("delivered jobs moved into the history")
		}
		if n == c.cfg.Batch && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
