package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/internal/retry"
	"github.com/evershield/bridge/upstream"
)

// kvTimeout bounds one KV operation of the budget.
const kvTimeout = 5 * time.Second

// load reads the shared bucket into the cache, creating it (full) when it does not exist yet.
func (s *Shared) load(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	e, err := s.cfg.KV.Get(ctx, s.cfg.stateKey())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.mu.Lock()
		st := State{Level: s.p.Capacity, At: s.clk.Now().UnixNano()}
		s.stamp(&st)
		s.mu.Unlock()
		b, _ := json.Marshal(st)
		rev, cerr := s.cfg.KV.Create(ctx, s.cfg.stateKey(), b)
		if cerr == nil {
			s.cache(st, rev)
			return nil
		}
		if !errors.Is(cerr, jetstream.ErrKeyExists) {
			return fmt.Errorf("budget %s: create: %w", s.cfg.stateKey(), cerr)
		}
		e, err = s.cfg.KV.Get(ctx, s.cfg.stateKey())
	}
	if err != nil {
		return fmt.Errorf("budget %s: read: %w", s.cfg.stateKey(), err)
	}
	var st State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return fmt.Errorf("budget %s: decode: %w", s.cfg.stateKey(), err)
	}
	s.cache(st, e.Revision())
	return nil
}

// cache takes st at rev as the bucket's value, unless a newer one is cached already.
func (s *Shared) cache(st State, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev <= s.rev {
		return
	}
	if s.cfg.Auto && st.Learned && st.RPM > 0 && st.RPM != s.p.RPM {
		// A limit the upstream told some process: run at it.
		s.log.Info().Int("rpm", st.RPM).Int("was", s.p.RPM).Str("from", st.Writer).
			Msg("upstream limit learned from x-ratelimit-limit (BRIDGE_API_RPM=auto)")
		s.p, s.learned = NewParams(st.RPM, s.cfg.Burst), true
	} else if st.RPM != 0 && st.RPM != s.p.RPM && st.Writer != s.cfg.Instance && !s.cfg.Auto {
		s.log.Warn().Int("rpm", s.p.RPM).Int("other_rpm", st.RPM).Str("other", st.Writer).
			Msg("another process runs the shared budget with a different RPM; give every process the same")
	}
	s.state, s.rev = st, rev
	now := s.clk.Now()
	if st.Paused(now) {
		// A pause stored by anyone stops this process too, tokens held included.
		if until := time.Unix(0, st.PausedUntil); until.After(s.pausedTill) {
			s.pausedTill = until
			s.pools = [2][]batch{}
		}
	}
	s.m.level.Set(st.Refilled(s.p, now).Level)
}

// store writes next at the revision it was computed from; a concurrent writer makes it fail with
// jetstream.ErrKeyRevisionMismatch.
func (s *Shared) store(ctx context.Context, next State, rev uint64) (uint64, error) {
	b, err := json.Marshal(next)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	return s.cfg.KV.Update(ctx, s.cfg.stateKey(), b, rev)
}

// storePause writes a 429 pause into the shared bucket, re-reading and retrying on conflicts.
func (s *Shared) storePause(ctx context.Context, hint time.Duration) error {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		next, _ := s.state.Pause(s.p, s.clk.Now(), hint)
		s.stamp(&next)
		rev := s.rev
		s.mu.Unlock()
		newRev, err := s.store(ctx, next, rev)
		if err == nil {
			s.cache(next, newRev)
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || attempt >= 10 {
			s.log.Warn().Err(err).Msg("store 429 pause in the shared budget")
			return err
		}
		if err := s.load(ctx); err != nil {
			return err
		}
	}
}

// storeObservation writes what rate-limit headers said (auto) into the shared bucket, re-reading and
// retrying on conflicts; nothing is written when the bucket says as much already.
func (s *Shared) storeObservation(ctx context.Context, rl upstream.RateLimit, at time.Time) error {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		next, changed := applyObservation(s.state.Refilled(s.p, s.clk.Now()), rl, at)
		rev := s.rev
		if changed && next.RPM != s.p.RPM {
			s.log.Info().Int("rpm", next.RPM).Int("was", s.p.RPM).
				Msg("upstream limit learned from x-ratelimit-limit (BRIDGE_API_RPM=auto)")
			s.p = NewParams(next.RPM, s.cfg.Burst)
			next.Level = min(next.Level, s.p.Capacity)
			if !s.learned && rl.Remaining >= 0 {
				// The bucket was filled at AutoStartRPM; the upstream's own count of what is left in its
				// window says what may go now (the resend of a submission switching contract, say).
				next.Level = max(next.Level, min(s.p.Capacity, float64(max(0, rl.Remaining-rl.InFlight))))
			}
		}
		if changed {
			s.learned = true
			s.stamp(&next)
		}
		s.mu.Unlock()
		if !changed {
			return nil
		}
		newRev, err := s.store(ctx, next, rev)
		if err == nil {
			s.cache(next, newRev)
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || attempt >= 10 {
			s.log.Warn().Err(err).Msg("store the upstream's rate-limit headers in the shared budget")
			return err
		}
		if err := s.load(ctx); err != nil {
			return err
		}
	}
}

// watch keeps the cache current with every process's writes, so a pause stored anywhere stops this
// process within a message's latency, and leases start from the latest value.
func (s *Shared) watch(ctx context.Context) {
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		w, err := s.cfg.KV.Watch(ctx, s.cfg.stateKey())
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("watch shared budget; retrying")
			}
			_ = backoff.Wait(ctx)
			continue
		}
		backoff.Reset()
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var st State
			if json.Unmarshal(e.Value(), &st) == nil {
				s.cache(st, e.Revision())
				s.poke()
			}
		}
		_ = w.Stop()
	}
}

// Usage is one process's report in BRIDGE_BUDGET (key proc.<instance>), for bridge status.
type Usage struct {
	// Account is the upstream account of the budget (Config.Account), empty for keys of releases before
	// namespaces.
	Account  string `json:"account,omitempty"`
	Instance string `json:"instance"`
	Budget   string `json:"budget"`
	RPM      int    `json:"rpm"`
	// Leased and Refused count this process's leased tokens and refused submissions since it started.
	Leased  uint64 `json:"leased"`
	Refused uint64 `json:"refused"`
	// Waiting is the calls waiting now, by class.
	Waiting map[string]int `json:"waiting"`
	At      time.Time      `json:"at"`
}

// report writes this process's usage every ReportEvery while it changes (and at least every ten
// periods, so a live process is never mistaken for a dead one).
func (s *Shared) report(ctx context.Context) {
	key := s.cfg.procKey()
	var last Usage
	t := time.NewTicker(s.cfg.ReportEvery)
	defer t.Stop()
	for quiet := 0; ; quiet++ {
		s.mu.Lock()
		u := Usage{Instance: s.cfg.Instance, Account: s.cfg.Account, Budget: s.cfg.Key, RPM: s.p.RPM, Leased: s.leased, Refused: s.refused,
			Waiting: map[string]int{}}
		for c := range s.queues {
			if n := s.queues[c].Len(); n > 0 {
				u.Waiting[upstream.Class(c).String()] = n
			}
		}
		s.mu.Unlock()
		changed := u.Leased != last.Leased || u.Refused != last.Refused || len(u.Waiting)+len(last.Waiting) > 0
		if changed || quiet >= 10 || last.Instance == "" {
			u.At = time.Now().UTC()
			if b, err := json.Marshal(u); err == nil {
				pctx, cancel := context.WithTimeout(ctx, kvTimeout)
				if _, err := s.cfg.KV.Put(pctx, key, b); err == nil {
					last, quiet = u, 0
				}
				cancel()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
