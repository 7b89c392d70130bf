package jobs

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/retry"
)

// Pending is the set of pending jobs of the whole account as JOBS holds them, kept current by a watch:
// the ledger of upstream calls owed to accepted work (every pending job owes one GET /job/{id}). It is
// safe for concurrent use.
type Pending struct {
	kv  jetstream.KeyValue
	log zerolog.Logger

	mu    sync.RWMutex // mu guards ids and ready
	ids   map[string]struct{}
	ready bool
}

// NewPending returns a ledger over the JOBS bucket; Run fills it.
func NewPending(kv jetstream.KeyValue, log zerolog.Logger) *Pending {
	return &Pending{kv: kv, log: log.With().Str("component", "pending").Logger(), ids: map[string]struct{}{}}
}

// Count is the number of pending jobs.
func (p *Pending) Count() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.ids)
}

// Has reports whether id is a pending job.
func (p *Pending) Has(id string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.ids[id]
	return ok
}

// Ready reports whether the watch has delivered every record that existed when it opened.
func (p *Pending) Ready() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.ready
}

// Run watches JOBS until ctx ends, reopening the watch (and rebuilding the set) when it breaks.
func (p *Pending) Run(ctx context.Context) {
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		w, err := p.kv.WatchAll(ctx)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn().Err(err).Msg("watch JOBS; retrying")
			}
			_ = backoff.Wait(ctx)
			continue
		}
		fresh := map[string]struct{}{}
		initial := true
		for e := range w.Updates() {
			if e == nil { // every record that existed is in: swap the rebuilt set in
				p.mu.Lock()
				p.ids, p.ready, initial = fresh, true, false
				p.mu.Unlock()
				backoff.Reset()
				continue
			}
			pending := false
			if e.Operation() == jetstream.KeyValuePut {
				var v struct {
					State State `json:"state"`
				}
				pending = json.Unmarshal(e.Value(), &v) == nil && v.State == StatePending
			}
			if initial {
				if pending {
					fresh[e.Key()] = struct{}{}
				}
				continue
			}
			p.mu.Lock()
			if pending {
				p.ids[e.Key()] = struct{}{}
			} else {
				delete(p.ids, e.Key())
			}
			p.mu.Unlock()
		}
		_ = w.Stop()
		if ctx.Err() == nil {
			p.log.Warn().Msg("JOBS watch ended; reopening")
			_ = backoff.Wait(ctx)
		}
	}
}
