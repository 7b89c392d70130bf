package submit

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/natsx"
)

// IntentPrefix prefixes the intent keys in BRIDGE_IDEMPOTENCY: intent.<id>.
const IntentPrefix = contract.IntentPrefix

// Intent is the value of an intent key: a submission on its way to the upstream.
type Intent struct {
	Modality string    `json:"modality"`
	At       time.Time `json:"at"`
	// KeyHash names the Idempotency-Key's entry, when the request had one.
	KeyHash string `json:"key_hash,omitempty"`
}

// intent is this request's record that it is about to submit. It is written before the upstream POST
// and removed (its subject purged from the bucket's stream, so it leaves no marker: [natsx.PurgeKey])
// once the job is recorded in JOBS or the upstream refused it, so one that outlives its
// submission means the process stopped between the upstream's answer and the JOBS write: the job may
// exist upstream and nowhere in the bridge. Such intents are counted (bridge_submit_unresolved_intents)
// and shown by bridge status; with BRIDGE_ADOPT the reconciler finds the job in the account's list. Its
// methods are no-ops on nil.
type intent struct {
	s   *Service
	key string
	rev uint64
}

// beginIntent records the intent; when that fails the submission goes on without (it is only logged).
func (s *Service) beginIntent(ctx context.Context, modality, keyHash string) *intent {
	b, _ := json.Marshal(Intent{Modality: modality, At: s.cfg.Now().UTC(), KeyHash: keyHash})
	in := &intent{s: s, key: IntentPrefix + nuid.Next()}
	rev, err := s.cfg.Idempotency.Put(ctx, in.key, b)
	if err != nil {
		s.log.Warn().Err(err).Msg("record submission intent; submitting without")
		return nil
	}
	in.rev = rev
	return in
}

// end removes the intent, leaving no subject: the submission's fate is known.
func (in *intent) end(ctx context.Context) {
	if in == nil {
		return
	}
	ctx, cancel := settleCtx(ctx)
	defer cancel()
	if err := in.s.purge(ctx, in.key, in.rev); err != nil {
		in.s.log.Warn().Err(err).Msg("remove submission intent; it expires with the bucket's TTL")
	}
}

// purge removes key, up to revision rev, from the idempotency bucket without a trace ([natsx.PurgeKey]).
func (s *Service) purge(ctx context.Context, key string, rev uint64) error {
	return natsx.PurgeKey(ctx, s.cfg.IdempotencyStream, key, rev)
}

// unresolved counts the intents older than a submission can take: interrupted submissions.
func (s *Service) unresolved(ctx context.Context) (int, error) {
	lister, err := s.cfg.Idempotency.ListKeysFiltered(ctx, IntentPrefix+">")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	stale := s.cfg.Now().Add(-s.staleAfter())
	n := 0
	for k := range lister.Keys() {
		if !strings.HasPrefix(k, IntentPrefix) {
			continue
		}
		e, err := s.cfg.Idempotency.Get(ctx, k)
		if err != nil {
			continue
		}
		var in Intent
		if json.Unmarshal(e.Value(), &in) == nil && in.At.Before(stale) {
			n++
		}
	}
	return n, nil
}

// staleAfter is how old an intent or a reserved Idempotency-Key must be to have been interrupted: longer
// than any submission and its record writes take.
func (s *Service) staleAfter() time.Duration { return s.cfg.SubmitTimeout + time.Minute }

// watchIntents updates bridge_submit_unresolved_intents every IntentScan until ctx ends.
func (s *Service) watchIntents(ctx context.Context) {
	t := time.NewTicker(s.cfg.IntentScan)
	defer t.Stop()
	last := 0
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := s.unresolved(sctx)
		cancel()
		if err == nil {
			s.metrics.unresolved.Set(float64(n))
			if n > last {
				s.log.Warn().Int("unresolved", n).Msg("submissions interrupted between the upstream's answer and the JOBS write: " +
					"their jobs may exist upstream untracked (BRIDGE_ADOPT=true recovers them)")
			}
			last = n
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
