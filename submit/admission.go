package submit

import (
	"fmt"
	"math"
	"time"

	"github.com/evershield/bridge/upstream"
)

// Ledger counts the accepted jobs that still owe the upstream a verification: every pending JOBS record
// of the account, whoever submitted it (jobs.Watcher).
type Ledger interface {
	Count() int
}

// DefaultAdmitShare is the share of the budget's capacity up to a job's deadline that admission plans
// to spend on owed work; the rest absorbs retries after upstream errors and webhooks of unknown jobs.
const DefaultAdmitShare = 0.8

// admit decides whether the account's budget can carry one more job of modality: its own POST now and
// its verification before its deadline, on top of every verification already owed (one GET per pending
// job, or what batches cost: Config.VerifyCost) and the in-flight list pages the reconciler spends on
// them until then. It returns a *BusyError
// when it cannot. Without a Ledger every submission is admitted here (the budget may still refuse it).
func (s *Service) admit(modality string) *upstream.BusyError {
	if s.cfg.Ledger == nil {
		return nil
	}
	d := s.cfg.Deadlines.For(modality)
	owed := s.cfg.Ledger.Count()
	sweeps := int(math.Ceil(d.Seconds() / s.cfg.PollInterval.Seconds()))
	pages := (owed + 1 + upstream.InFlightPage - 1) / upstream.InFlightPage
	verify := float64(owed + 1)
	if s.cfg.VerifyCost != nil {
		verify = s.cfg.VerifyCost(owed + 1)
	}
	need := 1 + verify + float64(pages*sweeps)
	capacity := s.cfg.Budget.Capacity(d)
	if need <= capacity*s.cfg.AdmitShare {
		return nil
	}
	// The budget refills at (Capacity(2d) - Capacity(d)) / d; the excess drains at that rate.
	rate := (s.cfg.Budget.Capacity(2*d) - capacity) / d.Seconds()
	wait := time.Minute
	if rate > 0 {
		wait = time.Duration((need - capacity*s.cfg.AdmitShare) / rate * float64(time.Second))
	}
	return &upstream.BusyError{
		RetryAfter: max(wait, time.Second),
		Reason: fmt.Sprintf("%d accepted jobs still owe the upstream a verification; the account's budget cannot carry "+
			"one more %s job before its %v deadline", owed, modality, d),
	}
}

// busy is the micro error of a refusal: code 429, a description starting BUSY and a Retry-After header.
func busy(be *upstream.BusyError) *replyError {
	return &replyError{code: "429", desc: fmt.Sprintf("BUSY: %s; retry after %ds", be.Reason, be.RetryAfterSeconds()),
		retryAfter: be.RetryAfterSeconds()}
}
