package verify

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/evershield/bridge/batch"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/upstream"
)

// DefaultBatchMin is how many jobs a round of the export waits for (batch.Config.Min): at most one call
// for fifteen results, and so the cost admission counts (batch.Cost).
const DefaultBatchMin = 15

// newBatchers makes the batchers of Config.Export: one for jobs with a record, one for the slow lane,
// whose rounds each wait for an unknown-job token.
func (v *Verifier) newBatchers() error {
	var err error
	v.batches, err = batch.New(batch.Config{Source: v.cfg.Export, Min: v.batchMin(), MaxWait: v.cfg.BatchMaxWait,
		Calls: v.metrics.exportCalls.WithLabelValues("main").Inc})
	if err != nil || v.unknownBudget == nil {
		return err
	}
	v.unknownBatches, err = batch.New(batch.Config{Source: v.cfg.Export, Min: v.batchMin(),
		MaxWait: v.cfg.BatchMaxWait, Gate: v.unknownBudget.wait,
		Calls: v.metrics.exportCalls.WithLabelValues("unknown").Inc})
	return err
}

// truth is the upstream's answer about a job and how it was obtained.
type truth struct {
	job    upstream.Job
	source string
	call   callTime
}

// truthOf asks the upstream about d's job the cheapest faithful way (the one policy, package batch): an
// export row the slow lane found already; a batch while calls are scarce (see scarce); else GET /job. A failed job is
// always fetched with GET /job (the export has no error_code), and so is a job with a record, or with
// provenance, that the export did not show. A job without either that the export did not show is
// errAbsent.
func (v *Verifier) truthOf(ctx context.Context, d delivery, h held) (truth, error) {
	v.owed.Add(1)
	defer v.owed.Add(-1)
	if d.exported != nil && d.exported.Status != upstream.StatusFailed {
		return truth{job: *d.exported, source: contract.SourceExport}, nil
	}
	if d.exported == nil && v.batches != nil && v.cfg.Fidelity.Faithful() && v.scarce() {
		lctx, cancel := d.lane.untilStopping(ctx)
		a, err := v.batches.Lookup(lctx, d.id, v.window(d, h))
		cancel()
		switch {
		case err != nil && d.lane.stopped():
			return truth{}, errStopping
		case err != nil && ctx.Err() != nil:
			return truth{}, err
		case err != nil:
			v.cfg.Fidelity.Failed(err) // GET /job below, and for every job until the next check
		case a.Found && a.Job.Status != upstream.StatusFailed:
			return truth{job: a.Job, source: contract.SourceExport}, nil
		case !a.Found && h.rev == 0 && d.msg.Headers().Get(contract.HeaderAuthenticated) == "":
			return truth{}, errAbsent
		}
	}
	start := time.Now()
	fetched, err := v.cfg.API.FetchJob(ctx, d.id, upstream.ClassVerify)
	if err == nil && hasCustom(fetched.Job.Raw) {
		v.cfg.Fidelity.SawCustom()
	}
	return truth{job: fetched.Job, source: contract.SourceWebhook,
		call: callTime{latency: time.Since(start), budgetWait: fetched.BudgetWait}}, err
}

// scarce is the policy's test (package batch): the verifications in flight and every call waiting for
// the budget exceed what it grants within batch.ScarceWithin, or the budget turned a submission away
// within batch.Overloaded.
func (v *Verifier) scarce() bool {
	return batch.Scarce(int(v.owed.Load())+v.cfg.Budget.Queued(), v.cfg.Budget.Capacity) ||
		v.cfg.Budget.RefusedWithin(batch.Overloaded)
}

// window is the created_at window of d's job (see package batch): its submission time for a job the
// bridge submitted, else when its first webhook came.
func (v *Verifier) window(d delivery, h held) batch.Window {
	if h.rev != 0 && !h.rec.SubmittedAt.IsZero() {
		return batch.OwnWindow(h.rec.SubmittedAt)
	}
	at := d.receivedAt
	if h.rev != 0 && h.rec.WebhookReceivedAt != nil && h.rec.WebhookReceivedAt.Before(at) {
		at = *h.rec.WebhookReceivedAt
	}
	return batch.ReceivedWindow(at, v.cfg.ListLookback)
}

// exported looks up, for the slow lane, a job without a record or provenance in a round of the export:
// found, its row is d's truth (no GET); absent from the window that covers it, it is decided: not found,
// without a call of its own, and without remembering the id as not found, so a real webhook or a poll of
// the same id later is still verified. ok is false when the export cannot be used now.
func (v *Verifier) exported(ctx context.Context, d *delivery) (vd verdict, decided, ok bool) {
	if v.unknownBatches == nil || !v.cfg.Fidelity.Faithful() {
		return verdict{}, false, false
	}
	lctx, cancel := d.lane.untilStopping(ctx)
	a, err := v.unknownBatches.Lookup(lctx, d.id, batch.ReceivedWindow(d.receivedAt, v.cfg.ListLookback))
	cancel()
	switch {
	case err != nil && d.lane.stopped():
		return verdict{action: actGiveBack, outcome: outcomeShutdown}, true, true
	case err != nil && ctx.Err() != nil:
		return retryLater("settle from the export", err), true, true
	case err != nil:
		v.cfg.Fidelity.Failed(err) // the account's list and GETs, until the next check
		return verdict{}, false, false
	case !a.Found:
		return deadLetter(ReasonNotFound, outcomeAbsent, errAbsent), true, true
	}
	v.metrics.provenance.WithLabelValues("export").Inc()
	d.exported = &a.Job
	return verdict{}, false, true
}

// errStopping: the lane stopped while the delivery waited for its round; it is given back at once, for
// another verifier or the next start, rather than holding the shutdown for up to a round's wait.
var errStopping = errors.New("the verifier is stopping")

var errAbsent = errors.New("the job is not in the account's export over the window its webhook implies: spoofed or another account's")

// hasCustom reports whether a GET /job answer shows custom categories, which the export lacks.
func hasCustom(raw json.RawMessage) bool {
	var j struct {
		Categories struct {
			Custom map[string]json.RawMessage `json:"custom"`
		} `json:"categories"`
	}
	return json.Unmarshal(raw, &j) == nil && len(j.Categories.Custom) > 0
}

func (v *Verifier) batchMin() int {
	if v.cfg.BatchMin > 0 {
		return v.cfg.BatchMin
	}
	return DefaultBatchMin
}
