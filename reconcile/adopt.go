package reconcile

import (
	"context"
	"time"

	"github.com/evershield/bridge/upstream"
)

// adoption is what BRIDGE_ADOPT remembers between sweeps.
type adoption struct {
	// from is the created_at the next finished list starts at: the last sweep's start less a margin for
	// clock skew. Jobs created before it and still running then were in that sweep's in-flight list.
	from time.Time
	// seen are ids adoption handled recently, so the overlap of two finished lists costs no JOBS write.
	seen map[string]time.Time
}

// adoptSkew is the margin for the upstream's clock and the list's consistency.
const adoptSkew = time.Minute

// inFlight asks for the in-flight list; with Adopt it also adopts the jobs in it, and those finished since
// the last sweep, that have no record.
func (r *Reconciler) inFlight(ctx context.Context, sweepStart time.Time) (map[string]struct{}, error) {
	if !r.cfg.Adopt {
		return r.cfg.API.InFlight(ctx)
	}
	inflight, err := r.cfg.API.InFlightJobs(ctx)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]struct{}, len(inflight))
	for id, j := range inflight {
		ids[id] = struct{}{}
		r.adoptOne(ctx, j, sweepStart)
	}
	r.adoptFinished(ctx, sweepStart)
	return ids, nil
}

// adoptFinished adopts the jobs created since the last sweep that finished before this one: a short job
// may never be seen in flight.
func (r *Reconciler) adoptFinished(ctx context.Context, sweepStart time.Time) {
	a := &r.adoption
	if a.from.IsZero() {
		a.from = sweepStart.Add(-2*r.cfg.PollInterval - adoptSkew)
	}
	f := upstream.ListFilter{Status: []string{upstream.StatusCompleted, upstream.StatusFailed}, From: a.from,
		Limit: upstream.InFlightPage}
	for page := 0; page < 100; page++ {
		l, err := r.cfg.API.ListJobs(ctx, f)
		if err != nil {
			r.m.errors.WithLabelValues("adopt").Inc()
			r.log.Warn().Err(err).Msg("finished list for adoption failed; the next sweep asks again")
			return // from stays: the next sweep covers this one's window too
		}
		for _, j := range l.Jobs {
			r.adoptOne(ctx, j, sweepStart)
		}
		if len(l.Jobs) < f.Limit {
			break
		}
		f.Offset += len(l.Jobs)
	}
	a.from = sweepStart.Add(-adoptSkew)
	for id, at := range a.seen {
		if sweepStart.Sub(at) > 2*(r.cfg.PollInterval+adoptSkew) {
			delete(a.seen, id)
		}
	}
}

// adoptOne gives a job of the account a record when it has none.
func (r *Reconciler) adoptOne(ctx context.Context, j upstream.Job, now time.Time) {
	a := &r.adoption
	if a.seen == nil {
		a.seen = map[string]time.Time{}
	}
	if _, ok := a.seen[j.JobID]; ok || r.idx.has(j.JobID) {
		return
	}
	created, err := r.cfg.Deliverer.Adopt(ctx, j)
	if err != nil {
		r.m.errors.WithLabelValues("adopt").Inc()
		r.log.Warn().Err(err).Str("job_id", j.JobID).Msg("adopt job; the next sweep tries again")
		return
	}
	a.seen[j.JobID] = now
	if created {
		r.m.adopted.Inc()
		r.log.Info().Str("job_id", j.JobID).Str("type", j.Type).Str("status", j.Status).Msg("job of the account adopted")
	}
}
