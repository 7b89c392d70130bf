package reconcile

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/internal/retry"
)

// leaseLoop competes for the lease until ctx ends. A standby retries Create every LeaseTTL/4 (a
// crashed holder's key expires by the bucket TTL, silently) and at once when the key is deleted (a
// clean stop).
func (r *Reconciler) leaseLoop(ctx context.Context) {
	freed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.watchLease(ctx, freed) })
	retry := r.leaseTTL / 4
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, r.leaseTTL/3)
		rev, err := r.leases.Create(cctx, LeaseKey, []byte(r.cfg.Instance))
		cancel()
		switch {
		case err == nil:
			r.term(ctx, rev)
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, jetstream.ErrKeyExists):
			// Someone else leads.
		default:
			r.m.errors.WithLabelValues("lease").Inc()
			r.log.Warn().Err(err).Msg("acquire lease")
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
		case <-freed:
		case <-t.C:
		}
		t.Stop()
	}
}

// watchLease signals freed when the lease key is deleted or purged.
func (r *Reconciler) watchLease(ctx context.Context, freed chan<- struct{}) {
	for ctx.Err() == nil {
		w, err := r.leases.Watch(ctx, LeaseKey, jetstream.UpdatesOnly())
		if err != nil {
			if ctx.Err() == nil {
				r.log.Debug().Err(err).Msg("watch lease")
			}
			_ = retry.Sleep(ctx, watchBackoff)
			continue
		}
		func() {
			defer func() { _ = w.Stop() }()
			for {
				select {
				case <-ctx.Done():
					return
				case e, ok := <-w.Updates():
					if !ok {
						return
					}
					if e != nil && e.Operation() != jetstream.KeyValuePut {
						select {
						case freed <- struct{}{}:
						default:
						}
					}
				}
			}
		}()
		_ = retry.Sleep(ctx, watchBackoff)
	}
}

// term is one leadership: the leader's work runs while the lease is renewed every LeaseTTL/3 with a
// compare-and-set on its revision (each renewal is a new message, so the bucket TTL counts from it).
// The term ends, and the work stops at once, when the renewal finds another revision, when no renewal
// succeeded for 2/3 of LeaseTTL (a standby may take over at LeaseTTL), or when ctx ends; in the last
// case the lease is deleted so that a standby takes over without waiting for it to expire.
func (r *Reconciler) term(ctx context.Context, rev uint64) {
	workCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.lead(workCtx)
	}()
	r.m.leader.Set(1)
	r.log.Info().Uint64("revision", rev).Dur("lease_ttl", r.leaseTTL).Msg("lease acquired: reconciling")
	end := func() {
		stop()
		<-done
		r.m.leader.Set(0)
		r.m.oldest.Set(0)
	}

	renew := time.NewTicker(r.leaseTTL / 3)
	defer renew.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			end()
			// The lease is ours up to this revision: delete exactly that, never a successor's.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			err := r.leases.Delete(dctx, LeaseKey, jetstream.LastRevision(rev))
			cancel()
			if err != nil {
				r.log.Warn().Err(err).Msg("release lease; it expires by its TTL")
			} else {
				r.log.Info().Msg("lease released")
			}
			return
		case <-renew.C:
		}
		cctx, cancel := context.WithTimeout(ctx, r.leaseTTL/3)
		next, err := r.leases.Update(cctx, LeaseKey, []byte(r.cfg.Instance), rev)
		cancel()
		switch {
		case err == nil:
			rev, lastOK = next, time.Now()
			continue
		case ctx.Err() != nil:
			continue // the select above ends the term
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			end()
			r.log.Warn().Err(errLeaseLost).Msg("lease taken over: stopped reconciling")
			return
		}
		r.m.errors.WithLabelValues("lease").Inc()
		if since := time.Since(lastOK); since >= 2*r.leaseTTL/3 {
			end()
			r.log.Warn().Err(err).Dur("since_renewal", since).Msg("lease not renewed in time: stopped reconciling")
			return
		}
		r.log.Warn().Err(err).Msg("renew lease")
	}
}
