package budget

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/clock"
	"github.com/evershield/bridge/upstream"
)

// Keys of BRIDGE_BUDGET.
const (
	// KeyAccount is the account's request budget (BRIDGE_API_RPM).
	KeyAccount = "account"
	// KeyUnknown is the budget of webhooks of jobs without a record (BRIDGE_UNKNOWN_JOB_RPM).
	KeyUnknown = "unknown"
	// ProcPrefix prefixes each process's usage report: proc.<instance>.
	ProcPrefix = "proc."
)

// Config configures a [Shared] budget. KV, RPM and Instance are required.
type Config struct {
	// KV is the BRIDGE_BUDGET bucket.
	KV jetstream.KeyValue
	// Key is the budget's key in KV; default KeyAccount.
	Key string
	// Account is the upstream account the budget is of ([AccountOf] its API key): every key is then
	// under it (<account>.account, <account>.proc.<instance>), so bridges of several namespaces on one
	// NATS account share the budget of one upstream account, and those of two upstream accounts do not.
	// Empty keeps the keys of releases before namespaces (account, proc.<instance>).
	Account string
	// RPM is the limit per minute shared by every process, and Burst how many calls may go at once
	// (default five seconds' worth). Every process must be given the same.
	RPM   int
	Burst int
	// Auto learns the limit from the upstream's rate-limit headers instead ([Shared.ObserveLimit]): RPM
	// is ignored, the bucket starts at AutoStartRPM (or at the limit another process learned already)
	// and runs at the learned limit from the first answer that carries x-ratelimit-limit on.
	Auto bool
	// Instance names this process in its usage report; unique among processes.
	Instance string
	// SubmitWait is the longest a submission waits for a token before it is refused as busy; default
	// DefaultSubmitWait.
	SubmitWait time.Duration
	// ReportEvery is the period of this process's usage report; default 2s.
	ReportEvery time.Duration
	// Log receives lease trouble and pauses, tagged component=budget.
	Log zerolog.Logger
	// Metrics registers the bridge_budget_* collectors, labelled with the budget's key; nil registers none.
	Metrics prometheus.Registerer
	// Clock is the time source; default the wall clock. Tests use a manual one.
	Clock clock.Clock
}

// AccountOf names the upstream account of apiKey in BRIDGE_BUDGET's keys: the first 16 hex digits of the
// key's SHA-256, which identify the account without revealing the key.
func AccountOf(apiKey string) string {
	sum := sha256.Sum256([]byte(apiKey))
	return hex.EncodeToString(sum[:8])
}

// StateKey is the key of the budget key of account in BRIDGE_BUDGET ("" is the key of releases before
// namespaces).
func StateKey(account, key string) string {
	if account == "" {
		return key
	}
	return account + "." + key
}

// stateKey is the budget's own key in KV.
func (c *Config) stateKey() string { return StateKey(c.Account, c.Key) }

// procKey is the key of this process's usage report of the budget.
func (c *Config) procKey() string {
	k := ProcPrefix + c.Instance
	if c.Key != KeyAccount {
		k += "." + c.Key
	}
	return StateKey(c.Account, k)
}

func (c *Config) setDefaults() {
	if c.Key == "" {
		c.Key = KeyAccount
	}
	if c.SubmitWait == 0 {
		c.SubmitWait = DefaultSubmitWait
	}
	if c.ReportEvery == 0 {
		c.ReportEvery = 2 * time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
}

// Validate reports the first invalid field, after defaults are applied.
func (c *Config) Validate() error {
	switch {
	case c.KV == nil:
		return errors.New("budget: KV: required")
	case c.RPM < 1 && !c.Auto:
		return fmt.Errorf("budget: RPM %d: must be at least 1", c.RPM)
	case c.Burst < 0:
		return fmt.Errorf("budget: Burst %d: must not be negative", c.Burst)
	case c.Instance == "":
		return errors.New("budget: Instance: required")
	case c.SubmitWait < 0:
		return fmt.Errorf("budget: SubmitWait %v: must not be negative", c.SubmitWait)
	}
	return nil
}

// DefaultSubmitWait is how long a submission may wait for a token before it is refused as busy.
const DefaultSubmitWait = time.Second

// DocumentedRPM is the account limit the upstream documents (about 60 requests a minute): what admission
// plans with under Auto until the account's own limit is learned.
const DocumentedRPM = 60

// AutoStartRPM is the rate of an auto budget until the upstream's first answer tells the account's
// limit: low, so that plans below 60 a minute are never exceeded while it learns.
const AutoStartRPM = 10

// windowSlack is how far two answers' x-ratelimit-reset may disagree (the header is whole seconds, and
// the answers take time) and still describe the same window of the upstream.
const windowSlack = 1500 * time.Millisecond

// pools: tokens leased for accepted work (verify, poll) serve only those; tokens leased at the
// submission threshold serve anyone.
const (
	poolAccepted = iota
	poolAny
)

// batch is leased tokens not yet used, and when they lapse.
type batch struct {
	n     int
	until time.Time
}

// waiter is one call waiting for a token.
type waiter struct {
	class    upstream.Class
	deadline time.Time // submissions only: refused as busy past it
	ready    chan error
	elem     *list.Element
	done     bool // settled: granted or refused
}

// Shared is the account-wide budget: an [upstream.Limiter] backed by one token bucket in KV that every
// process on the same NATS leases from; see the package doc. Start it before use and Stop it after the
// last call. It is safe for concurrent use.
type Shared struct {
	cfg Config
	p   Params
	clk clock.Clock
	log zerolog.Logger
	m   *metrics

	kick chan struct{}

	mu         sync.Mutex // mu guards the fields below
	state      State
	rev        uint64 // revision of state; 0 while the key is not read
	pools      [2][]batch
	queues     [3]list.List // by upstream.Class
	waiting    int
	pausedTill time.Time           // this process's view of the pause, ahead of the stored one
	pauseHint  time.Duration       // a pause to store; 0 = none
	observed   *upstream.RateLimit // rate-limit headers to store (auto); nil = none
	observedAt time.Time
	learned    bool // auto: s.p runs at a limit the upstream told
	timer      clock.Timer
	wakeAt     time.Time
	leased     uint64    // tokens this process leased
	refused    uint64    // submissions refused as busy
	refusedAt  time.Time // when the last one was
	successes  int       // answers that were not 429s since the last write, to restore the rate with it
	stopped    bool
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

var (
	_ upstream.Limiter        = (*Shared)(nil)
	_ upstream.HeaderObserver = (*Shared)(nil)
)

// New checks cfg. Start makes the budget usable.
func New(cfg Config) (*Shared, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics, cfg.Key)
	if err != nil {
		return nil, err
	}
	rpm := cfg.RPM
	if cfg.Auto {
		rpm = AutoStartRPM
	}
	return &Shared{
		cfg:  cfg,
		p:    NewParams(rpm, cfg.Burst),
		clk:  cfg.Clock,
		log:  cfg.Log.With().Str("component", "budget").Str("budget", cfg.Key).Logger(),
		m:    m,
		kick: make(chan struct{}, 1),
	}, nil
}

// Params are the budget's arithmetic (with Auto, at the limit learned so far).
func (s *Shared) Params() Params {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

// ObserveLimit implements [upstream.HeaderObserver]. With Auto, the limit an answer reports becomes the
// budget's RPM in the shared bucket, so every process runs at it; its remaining and reset become the
// window cap (State.WindowEnd, WindowLeft): until the reset no more calls start than the upstream said
// remain, less the calls still in flight. Without Auto the headers are ignored. It never blocks: the
// write to the shared bucket is the loop's.
func (s *Shared) ObserveLimit(rl upstream.RateLimit) {
	if !s.cfg.Auto || rl.Limit <= 0 {
		return
	}
	s.mu.Lock()
	s.observed, s.observedAt = &rl, s.clk.Now()
	s.mu.Unlock()
	s.poke()
}

// applyObservation is st after the headers rl seen at at; changed is false when st already says as much.
func applyObservation(st State, rl upstream.RateLimit, at time.Time) (next State, changed bool) {
	if !st.Learned || st.RPM != rl.Limit {
		st.RPM, st.Learned, changed = rl.Limit, true, true
	}
	if rl.Remaining < 0 || rl.Reset <= 0 {
		return st, changed
	}
	end := at.Add(rl.Reset).UnixNano()
	left := max(0, rl.Remaining-rl.InFlight)
	d := end - st.WindowEnd
	switch {
	case st.WindowEnd > at.UnixNano() && d > -int64(windowSlack) && d < int64(windowSlack):
		// The same window: the upstream's count only grows, so keep the lower of the two.
		if left < st.WindowLeft {
			st.WindowLeft, changed = left, true
		}
	default:
		st.WindowEnd, st.WindowLeft, changed = end, left, true
	}
	return st, changed
}

// stamp marks next as written by this process: its limit, and whether the limit was learned.
// Called with mu held.
func (s *Shared) stamp(next *State) {
	next.RPM, next.Writer, next.Learned = s.p.RPM, s.cfg.Instance, s.learned
}

// Start reads (or creates) the shared bucket, then watches it and serves waiting calls until Stop. It
// fails when the bucket cannot be read: start-up needs NATS.
func (s *Shared) Start(ctx context.Context) error {
	if err := s.load(ctx); err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.watch(rctx) }()
	go func() { defer s.wg.Done(); s.loop(rctx) }()
	go func() { defer s.wg.Done(); s.report(rctx) }()
	s.log.Info().Int("rpm", s.p.RPM).Int("burst", s.p.Burst).Float64("capacity", s.p.Capacity).
		Float64("reserve", s.p.Reserve).Dur("lease_ttl", s.p.LeaseTTL).Msg("shared upstream budget started")
	return nil
}

// Stop ends the budget: waiting calls get an error, and this process's usage report is removed. It is
// idempotent.
func (s *Shared) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	cancel := s.cancel
	s.failAll(errors.New("budget: stopped"))
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
	ctx, done := context.WithTimeout(context.Background(), 2*time.Second)
	defer done()
	_ = s.cfg.KV.Delete(ctx, s.cfg.procKey())
}

// Wait implements [upstream.Limiter].
func (s *Shared) Wait(ctx context.Context, class upstream.Class) error {
	class = min(max(class, upstream.ClassVerify), upstream.ClassSubmit)
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return errors.New("budget: stopped")
	}
	now := s.clk.Now()
	if s.waiting == 0 && s.take(now, class) {
		s.mu.Unlock()
		return nil
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return err
	}
	w := &waiter{class: class, ready: make(chan error, 1)}
	if class == upstream.ClassSubmit {
		w.deadline = now.Add(s.cfg.SubmitWait)
	}
	w.elem = s.queues[class].PushBack(w)
	s.waiting++
	s.m.waiting.WithLabelValues(class.String()).Inc()
	s.mu.Unlock()
	s.poke()

	select {
	case err := <-w.ready:
		return err
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !w.done {
		s.dequeue(w)
		return ctx.Err()
	}
	if err := <-w.ready; err != nil {
		return err
	}
	// Granted as ctx ended: the token is not given back. Handing it on would stretch its lease past the
	// life the bucket's capacity allows for; it lapses, which only ever errs on the safe side.
	return ctx.Err()
}

// RateLimited implements [upstream.Limiter]: this process stops at once, and the pause is stored in the
// shared bucket so every process stops.
func (s *Shared) RateLimited(hint time.Duration) time.Duration {
	s.mu.Lock()
	now := s.clk.Now()
	_, d := s.state.Pause(s.p, now, hint)
	if until := now.Add(d); until.After(s.pausedTill) {
		s.pausedTill = until
	}
	s.pauseHint = max(s.pauseHint, d)
	s.pools = [2][]batch{}
	s.mu.Unlock()
	s.log.Warn().Dur("pause", d).Msg("upstream rate limit: pausing every process")
	s.poke()
	return d
}

// Succeeded implements [upstream.Limiter]: successes restore a rate lowered by 429s, carried on the
// next lease's write (no write of their own).
func (s *Shared) Succeeded() {
	s.mu.Lock()
	s.successes++
	s.mu.Unlock()
}

// Available is the number of calls that could start now without waiting: the tokens this process holds
// plus what the shared bucket could give now; only those held during a 429 pause.
func (s *Shared) Available() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	n := float64(s.held(now, poolAccepted) + s.held(now, poolAny))
	if now.Before(s.pausedTill) || s.rev == 0 {
		return n
	}
	return n + math.Floor(max(0, s.state.Refilled(s.p, now).Level))
}

// Capacity is the number of calls the budget can grant over the next d at its current rate, counting
// what it could grant now. Under Auto, until the account's limit is learned, it is planned at
// DocumentedRPM rather than at the cautious AutoStartRPM the calls go at meanwhile: an idle bridge accepts
// its first submission, whose answer teaches it the real limit.
func (s *Shared) Capacity(d time.Duration) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	st := s.state
	if now.Before(s.pausedTill) && now.UnixNano() >= st.PausedUntil {
		st.PausedUntil = s.pausedTill.UnixNano()
	}
	p := s.p
	if s.cfg.Auto && !s.learned {
		p = NewParams(DocumentedRPM, s.cfg.Burst)
	}
	return float64(s.held(now, poolAccepted)+s.held(now, poolAny)) + st.Capacity(p, now, d)
}

// Snapshot is the shared bucket as this process last saw it, refilled to now.
func (s *Shared) Snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Refilled(s.p, s.clk.Now())
}

func (s *Shared) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// take spends a held token for class, if one is there. Called with mu held.
func (s *Shared) take(now time.Time, class upstream.Class) bool {
	if now.Before(s.pausedTill) {
		return false
	}
	pools := []int{poolAny}
	if class != upstream.ClassSubmit {
		pools = []int{poolAccepted, poolAny}
	}
	for _, p := range pools {
		if s.held(now, p) > 0 {
			s.pools[p][0].n--
			if s.pools[p][0].n == 0 {
				s.pools[p] = s.pools[p][1:]
			}
			return true
		}
	}
	return false
}

// held is the number of unlapsed tokens in pool p; lapsed batches are dropped. Called with mu held.
func (s *Shared) held(now time.Time, p int) int {
	live := s.pools[p][:0]
	n := 0
	for _, b := range s.pools[p] {
		if b.n > 0 && !now.After(b.until) {
			live = append(live, b)
			n += b.n
		}
	}
	s.pools[p] = live
	return n
}

func (s *Shared) dequeue(w *waiter) {
	s.queues[w.class].Remove(w.elem)
	s.waiting--
	s.m.waiting.WithLabelValues(w.class.String()).Dec()
}

// settle ends w's wait with err (nil = granted). Called with mu held.
func (s *Shared) settle(w *waiter, err error) {
	s.dequeue(w)
	w.done = true
	w.ready <- err
}

func (s *Shared) failAll(err error) {
	for c := range s.queues {
		for e := s.queues[c].Front(); e != nil; e = s.queues[c].Front() {
			s.settle(e.Value.(*waiter), err)
		}
	}
}

// serve hands held tokens to waiters, best class first, FIFO within a class. Called with mu held.
func (s *Shared) serve(now time.Time) {
	for c := range s.queues {
		for e := s.queues[c].Front(); e != nil; e = s.queues[c].Front() {
			if !s.take(now, upstream.Class(c)) {
				break
			}
			s.settle(e.Value.(*waiter), nil)
		}
	}
}

// loop serves waiting calls: from held tokens, else by leasing from the shared bucket, else by arming a
// timer for when the bucket will have tokens again.
func (s *Shared) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.step(ctx)
	}
}

// step does one round of loop.
func (s *Shared) step(ctx context.Context) {
	if s.storePending(ctx) {
		return
	}
	s.mu.Lock()
	now := s.clk.Now()
	s.serve(now)
	if s.waiting == 0 {
		s.mu.Unlock()
		return
	}
	if now.Before(s.pausedTill) {
		s.refuseLate(now, s.pausedTill.Sub(now))
		s.arm(now, s.pausedTill.Sub(now))
		s.mu.Unlock()
		return
	}
	l := lease{class: upstream.ClassSubmit, at: now, successes: s.successes, rev: s.rev}
	want := s.queues[upstream.ClassSubmit].Len()
	if n := s.queues[upstream.ClassVerify].Len() + s.queues[upstream.ClassPoll].Len(); n > 0 {
		l.class, want = upstream.ClassVerify, n+s.prefetch()
	}
	st := s.state
	l.next, l.n = st.Recovered(now, l.successes).Lease(s.p, now, l.class, want)
	if l.n == 0 {
		wait := st.Wait(s.p, now, l.class, 1)
		s.refuseLate(now, wait)
		s.arm(now, wait)
		s.mu.Unlock()
		return
	}
	s.stamp(&l.next)
	s.mu.Unlock()
	s.commit(ctx, l)
}

// storePending writes a 429 pause or an observation of the upstream's headers waiting to be stored,
// and reports whether it did one (the loop goes round again).
func (s *Shared) storePending(ctx context.Context) bool {
	s.mu.Lock()
	if hint := s.pauseHint; hint > 0 {
		s.pauseHint = 0
		s.mu.Unlock()
		if err := s.storePause(ctx, hint); err != nil {
			s.mu.Lock()
			s.pauseHint = max(s.pauseHint, hint)
			s.mu.Unlock()
			s.after(ctx, 200*time.Millisecond)
			return true
		}
		s.poke()
		return true
	}
	if obs := s.observed; obs != nil {
		s.observed = nil
		at := s.observedAt
		s.mu.Unlock()
		if err := s.storeObservation(ctx, *obs, at); err != nil {
			s.after(ctx, 200*time.Millisecond)
			return true
		}
		s.poke()
		return true
	}
	s.mu.Unlock()
	return false
}

// lease is a lease decided on the cached state, to be written.
type lease struct {
	class     upstream.Class
	at        time.Time
	next      State
	n         int
	rev       uint64 // the revision next was computed from
	successes int    // the successes folded into next
}

// commit writes a lease at the revision it was computed from and hands out its tokens, or, when another
// process wrote first, reads the bucket again for the next round.
func (s *Shared) commit(ctx context.Context, l lease) {
	newRev, err := s.store(ctx, l.next, l.rev)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.m.leases.WithLabelValues("granted").Inc()
		s.m.tokens.Add(float64(l.n))
		s.leased += uint64(l.n)
		s.successes -= l.successes
		if newRev > s.rev {
			s.state, s.rev = l.next, newRev
		}
		pool := poolAccepted
		if l.class == upstream.ClassSubmit {
			pool = poolAny
		}
		s.pools[pool] = append(s.pools[pool], batch{n: l.n, until: l.at.Add(s.p.LeaseTTL)})
		s.serve(l.at)
		s.poke()
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Another process leased first: decide again on its value (the watch brings it; read it now to
		// not wait for the watch).
		s.m.leases.WithLabelValues("conflict").Inc()
		s.mu.Unlock()
		lerr := s.load(ctx)
		s.mu.Lock()
		if lerr != nil {
			s.arm(l.at, 200*time.Millisecond)
			return
		}
		s.poke()
	default:
		s.m.leases.WithLabelValues("error").Inc()
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("lease from the shared budget failed; no upstream call until it works")
		}
		s.refuseLate(l.at, time.Second)
		s.arm(l.at, 250*time.Millisecond)
	}
}

// prefetch is how many tokens a lease for accepted work takes beyond the callers waiting, so that the
// next calls need no round trip. Tokens that lapse unused are lost to every process, so it prefetches
// only at high rates (20/s and up), and then a quarter of what the rate gives over a lease's life.
func (s *Shared) prefetch() int {
	if s.p.Rate < 20 {
		return 0
	}
	return int(s.p.Rate * s.p.LeaseTTL.Seconds() / 4)
}

// refuseLate refuses, as busy, the waiting submissions whose deadline comes before the budget could
// serve them: the earliest token is wait away, and every caller ahead needs one too. Called with mu held.
func (s *Shared) refuseLate(now time.Time, wait time.Duration) {
	q := &s.queues[upstream.ClassSubmit]
	if q.Len() == 0 {
		return
	}
	ahead := s.queues[upstream.ClassVerify].Len() + s.queues[upstream.ClassPoll].Len()
	rate := s.state.rate(s.p, now.UnixNano())
	var next *list.Element
	for e := q.Front(); e != nil; e = next {
		next = e.Next()
		w := e.Value.(*waiter)
		due := wait + time.Duration(float64(ahead)/rate*float64(time.Second))
		if now.Add(due).After(w.deadline) {
			s.refused++
			s.refusedAt = now
			s.settle(w, &upstream.BusyError{
				RetryAfter: max(due, time.Second),
				Reason: fmt.Sprintf("the account's upstream requests (%d/min) are owed to accepted work for the next %v",
					s.p.RPM, due.Round(100*time.Millisecond)),
			})
			continue
		}
		ahead++
	}
}

// arm makes sure step runs again no later than now+d. Called with mu held.
func (s *Shared) arm(now time.Time, d time.Duration) {
	d = max(d, time.Millisecond)
	if q := s.queues[upstream.ClassSubmit].Front(); q != nil {
		d = min(d, max(time.Millisecond, q.Value.(*waiter).deadline.Sub(now)))
	}
	at := now.Add(d)
	if s.timer != nil && !at.Before(s.wakeAt) && s.wakeAt.After(now) {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.wakeAt = at
	s.timer = s.clk.At(at, s.poke)
}

// after pokes the loop after d, outside mu.
func (s *Shared) after(_ context.Context, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.arm(s.clk.Now(), d)
}

// Refused notes a submission turned away by admission (submit), which plans on this budget: like one
// the budget refused itself, it says demand exceeds what the budget grants.
func (s *Shared) Refused() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused++
	s.refusedAt = s.clk.Now()
}

// RefusedWithin reports whether this process refused a submission as busy within the last d: demand
// exceeds what the budget grants, so every call should serve as many results as it can.
func (s *Shared) RefusedWithin(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.refusedAt.IsZero() && s.clk.Now().Sub(s.refusedAt) < d
}

// Queued is the number of this process's calls waiting for the budget, of every class.
func (s *Shared) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}
