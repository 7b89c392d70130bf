package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/retry"
)

// maxProbe is the longest period of the watch's probe, and the default.
const maxProbe = 5 * time.Second

// UpdateKind says what an [Update] is.
type UpdateKind uint8

// Kinds of [Update], in the order a watch feeds them: a replay (a subscriber forgets what it was fed),
// every record of the bucket, caught up, live records; lost when the watch failed, then a new replay.
const (
	UpdateReplay UpdateKind = iota
	UpdateRecord
	UpdateCaughtUp
	UpdateLost
)

// Update is one step of the JOBS watch, as a [Watcher] feeds it to its subscribers. A record is a put
// (Key, Value) or, Deleted, a delete or purge of Key; Revision is its stream sequence.
type Update struct {
	Kind     UpdateKind
	Key      string
	Value    []byte
	Deleted  bool
	Revision uint64
}

// Watcher is the process's one watch of JOBS. It keeps the set of pending jobs of the whole account (the
// ledger of upstream calls owed to accepted work: every pending job owes one GET /job/{id}) and feeds
// every record to its subscribers, such as the reconciler's index: every role that needs the pending jobs
// reads them from one watch, one probe and one replay. Its queries are safe for concurrent use.
type Watcher struct {
	kv    jetstream.KeyValue
	probe time.Duration
	log   zerolog.Logger
	subs  []func(Update)      // set before Run
	fresh map[string]struct{} // the set a replay builds; only Run touches it
	ready chan struct{}
	once  sync.Once // once closes ready

	mu      sync.RWMutex // mu guards pending
	pending map[string]struct{}
}

// NewWatcher returns a watcher of the JOBS bucket kv, probed every probe (at most, and by default, 5s).
func NewWatcher(kv jetstream.KeyValue, probe time.Duration, log zerolog.Logger) *Watcher {
	if probe <= 0 || probe > maxProbe {
		probe = maxProbe
	}
	return &Watcher{kv: kv, probe: probe, log: log.With().Str("component", "jobs-watch").Logger(),
		ready: make(chan struct{}), pending: map[string]struct{}{}}
}

// Subscribe makes f receive every [Update], in order, on Run's goroutine; call it before [Watcher.Run].
func (w *Watcher) Subscribe(f func(Update)) { w.subs = append(w.subs, f) }

// Ready is closed once the first replay is in: in the pending set, and fed to every subscriber.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Count is the number of pending jobs.
func (w *Watcher) Count() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.pending)
}

// Has reports whether id is a pending job.
func (w *Watcher) Has(id string) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	_, ok := w.pending[id]
	return ok
}

// Run watches JOBS until ctx ends (then it returns nil), reopening and replaying a watch that is lost.
func (w *Watcher) Run(ctx context.Context) error {
	backoff := retry.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for ctx.Err() == nil {
		kw, err := w.kv.WatchAll(ctx)
		if err == nil {
			err = w.follow(ctx, kw, &backoff)
			_ = kw.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
		w.log.Warn().Err(err).Msg("JOBS watch lost; reopening")
		w.feed(Update{Kind: UpdateLost})
		_ = backoff.Wait(ctx)
	}
	return nil
}

// follow feeds the watch's entries until ctx ends, the watch closes, or the probe finds that the watch no
// longer follows the bucket; it returns why. Every probe period the probe reads the bucket's stream info
// (one request): the watch is reopened, and the bucket replayed, when the stream was recreated, is behind
// the watch, or had records the watch has not delivered since the probe before. Why: the watch is an
// ordered consumer that nats.go recreates only after two missed 5 s heartbeats, so records written during
// a NATS restart came 10 to 20 s late; and one on a bucket deleted and made again never delivers again.
func (w *Watcher) follow(ctx context.Context, kw jetstream.KeyWatcher, backoff *retry.Backoff) error {
	tick := time.NewTicker(w.probe)
	defer tick.Stop()
	var p watchProbe
	start, ready := time.Now(), false
	w.feed(Update{Kind: UpdateReplay})
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if !ready {
				continue // the replay is still under way; its end marker comes after every value
			}
			if why := w.probeWatch(ctx, &p); why != "" {
				return fmt.Errorf("JOBS watch no longer follows the bucket: %s (seen %d, stream last %d)", why, p.seen, p.last)
			}
		case e, ok := <-kw.Updates():
			switch {
			case !ok:
				return errors.New("JOBS watch closed")
			case e == nil:
				ready = true
				w.probeWatch(ctx, &p) // the stream's creation time, for the next probes
				backoff.Reset()
				w.feed(Update{Kind: UpdateCaughtUp})
				w.log.Info().Int("pending", w.Count()).Dur("took", time.Since(start)).Msg("JOBS replayed")
			default:
				p.seen = max(p.seen, e.Revision())
				w.feed(Update{Kind: UpdateRecord, Key: e.Key(), Value: e.Value(),
					Deleted: e.Operation() != jetstream.KeyValuePut, Revision: e.Revision()})
			}
		}
	}
}

// feed is the one place updates go out: the pending set first, then the subscribers.
func (w *Watcher) feed(u Update) {
	w.keep(u)
	for _, f := range w.subs {
		f(u)
	}
}

// keep follows u in the pending set. A replay builds a fresh set, swapped in once caught up, so that the
// queries answer from the last whole set meanwhile.
func (w *Watcher) keep(u Update) {
	switch u.Kind {
	case UpdateReplay:
		w.fresh = map[string]struct{}{}
	case UpdateCaughtUp:
		w.mu.Lock()
		w.pending, w.fresh = w.fresh, nil
		w.mu.Unlock()
		w.once.Do(func() { close(w.ready) })
	case UpdateRecord:
		var v struct {
			State State `json:"state"`
		}
		set := w.fresh
		if set == nil {
			w.mu.Lock()
			defer w.mu.Unlock()
			set = w.pending
		}
		if !u.Deleted && json.Unmarshal(u.Value, &v) == nil && v.State == StatePending {
			set[u.Key] = struct{}{}
		} else {
			delete(set, u.Key)
		}
	}
}

// watchProbe is what the probes of one JOBS watch know.
type watchProbe struct {
	created  time.Time // the bucket stream's creation time at the first probe
	seen     uint64    // the last revision the watch delivered
	last     uint64    // the stream's last sequence at the last probe
	seenThen uint64    // seen at the last probe
}

// probeWatch compares the watch with the bucket's stream and returns why the watch must be reopened,
// or "" when it follows (or the stream cannot be read: the connection's own recovery covers that).
func (w *Watcher) probeWatch(ctx context.Context, p *watchProbe) string {
	cctx, cancel := context.WithTimeout(ctx, maxProbe)
	defer cancel()
	st, err := w.kv.Status(cctx)
	if err != nil {
		return ""
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return ""
	}
	info := bs.StreamInfo()
	behind := p.last > p.seen && p.seen == p.seenThen // records known a probe ago, none delivered since
	p.last, p.seenThen = info.State.LastSeq, p.seen
	switch {
	case p.created.IsZero():
		p.created = info.Created
	case !info.Created.Equal(p.created):
		return "bucket recreated"
	case p.last < p.seen:
		return "bucket behind the watch"
	case behind:
		return "watch stalled"
	}
	return ""
}
