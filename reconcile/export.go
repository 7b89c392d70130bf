package reconcile

import (
	"context"
	"time"

	"github.com/evershield/bridge/batch"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/upstream"
)

// exportShare is the share of the budget the poll-only export polls may spend while 20 or more jobs are
// in flight; fewer stretch the interval (see exportEvery).
const exportShare = 0.15

// exportFull is how many jobs in flight make a poll's call worth its full pace.
const exportFull = 20

// exportSpan bounds how far back a poll's window reaches: late-watched jobs older than it are left to
// their deadline checks and the list sweeps.
const exportSpan = 2 * time.Hour

// exportEvery is the poll-only interval: at rpm calls a minute, exportShare of them (at 60/min, every
// 6.7 s: a result waits 3.3 s for its poll on average). While calls are scarce (idle false), fewer than
// exportFull jobs in flight stretch it in proportion, so a poll's call is shared by enough results; while
// the budget is idle its calls cost nothing else. Never longer than the poll interval.
func exportEvery(inFlight, rpm int, idle bool, poll time.Duration) time.Duration {
	if rpm <= 0 {
		return poll
	}
	every := time.Duration(float64(time.Minute) / (exportShare * float64(rpm)))
	if inFlight < exportFull && !idle {
		every = every * exportFull / time.Duration(max(1, inFlight))
	}
	return min(max(every, time.Second), poll)
}

// exportIdle is the budget level, in calls free now, at which the poll-only interval does not stretch.
const exportIdle = 2

// exportLoop polls the export while poll-only stays on (pollOnly), and returns when it goes off or ctx
// ends. With nothing pending it waits for a job to become pending, then a poll interval's share.
func (r *Reconciler) exportLoop(ctx context.Context) {
	for r.pollOnly() {
		wait := r.exportSweep(ctx)
		if _, n := r.idx.oldestSubmitted(); n == 0 {
			select {
			case <-ctx.Done():
				return
			case <-r.idx.added:
			case <-time.After(r.cfg.PollInterval):
				continue
			}
			wait = exportEvery(1, r.cfg.RPM(), true, r.cfg.PollInterval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// pollOnly reports whether sweeps learn results from the export instead of the in-flight list: poll-only
// (no webhook URL) with an export that is faithful now, and no adoption (which needs the list).
func (r *Reconciler) pollOnly() bool {
	return r.cfg.PollOnly && r.cfg.Export != nil && !r.cfg.Adopt && r.cfg.Fidelity.Faithful()
}

// exportSweep is the poll-only sweep: one GET /jobs/export over the window of the pending (and
// late-watched) jobs; every terminal one in it is delivered from its row, source export, but a failed
// one after a GET /job (the export has no error_code). It returns when the next poll is due.
func (r *Reconciler) exportSweep(ctx context.Context) time.Duration {
	start := r.cfg.Now()
	oldest, n := r.idx.oldestSubmitted()
	if n == 0 {
		r.m.sweeps.WithLabelValues("skipped").Inc()
		return r.cfg.PollInterval
	}
	every := exportEvery(n, r.cfg.RPM(), r.cfg.Budget.Available() >= exportIdle, r.cfg.PollInterval)
	from := oldest.Add(-batch.Skew)
	if limit := start.Add(-exportSpan); from.Before(limit) {
		from = limit
	}
	var done []upstream.Job
	err := r.cfg.Export.ExportJobs(ctx, from, start.Add(batch.Skew), func(j upstream.Job) error {
		if j.Terminal() && r.idx.has(j.JobID) {
			done = append(done, j)
		}
		return nil
	})
	r.m.calls.Observe(1)
	if err != nil {
		if ctx.Err() == nil {
			r.m.sweeps.WithLabelValues("error").Inc()
			r.m.errors.WithLabelValues("export").Inc()
			// The in-flight list and GETs take over until the next check says the export is usable.
			r.cfg.Fidelity.Failed(err)
		}
		return every
	}
	for _, j := range done {
		r.deliverExported(ctx, j)
	}
	r.m.sweeps.WithLabelValues("ok").Inc()
	r.m.sweepDuration.Observe(time.Since(start).Seconds())
	return every
}

// deliverExported delivers a terminal job found in an export poll.
func (r *Reconciler) deliverExported(ctx context.Context, j upstream.Job) {
	log := r.log.With().Str("job_id", j.JobID).Logger()
	source := contract.SourceExport
	if j.Status == upstream.StatusFailed {
		got, err := r.cfg.API.GetJob(ctx, j.JobID, upstream.ClassPoll)
		if err != nil {
			r.m.errors.WithLabelValues("get_job").Inc()
			log.Warn().Err(err).Msg("get failed job; the next poll retries")
			return
		}
		j, source = got, contract.SourcePoll
	}
	out, err := r.cfg.Deliverer.Deliver(ctx, j, source, r.cfg.Now())
	if err != nil {
		r.m.errors.WithLabelValues("deliver").Inc()
		log.Warn().Err(err).Msg("deliver polled result; the next poll retries")
		return
	}
	r.count(out)
}

// exportMissed settles the missed jobs of a sweep with one export call over their submission times, and
// returns those it leaves to a GET /job each: failed ones (the export has no error_code), those it did not
// show, and all of them when the call fails.
func (r *Reconciler) exportMissed(ctx context.Context, tasks []task) []task {
	from, to := time.Unix(0, tasks[0].e.submitted), time.Unix(0, tasks[0].e.submitted)
	for _, t := range tasks[1:] {
		at := time.Unix(0, t.e.submitted)
		if at.Before(from) {
			from = at
		}
		if at.After(to) {
			to = at
		}
	}
	want := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		want[t.id] = true
	}
	found := map[string]upstream.Job{}
	if limit := to.Add(-exportSpan); from.Before(limit) {
		from = limit // older ones are fetched one by one
	}
	err := r.cfg.Export.ExportJobs(ctx, from.Add(-batch.Skew), to.Add(batch.Skew), func(j upstream.Job) error {
		if want[j.JobID] {
			found[j.JobID] = j
		}
		return nil
	})
	if err != nil {
		r.m.errors.WithLabelValues("export").Inc()
		if ctx.Err() == nil {
			r.cfg.Fidelity.Failed(err)
		}
		return tasks
	}
	var left []task
	for _, t := range tasks {
		j, ok := found[t.id]
		switch {
		case !ok || j.Status == upstream.StatusFailed:
			left = append(left, t)
		case !j.Terminal():
			r.idx.fetched(t, r.cfg.Now(), true, false)
		default:
			out, err := r.cfg.Deliverer.Deliver(ctx, j, contract.SourceExport, r.cfg.Now())
			r.idx.fetched(t, r.cfg.Now(), false, false)
			if err != nil {
				r.m.errors.WithLabelValues("deliver").Inc()
				r.log.Warn().Err(err).Str("job_id", t.id).Msg("deliver exported result; next sweep retries")
				continue
			}
			r.count(out)
		}
	}
	return left
}
