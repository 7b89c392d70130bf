package reconcile

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/batch"
	"github.com/evershield/bridge/internal/procname"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream"
)

// LeaseKey is the key of the reconciler's lease in the BRIDGE_LEASES bucket.
const LeaseKey = "reconcile"

// API is the part of the upstream client (*upstream.Client) the reconciler calls, each at
// [upstream.ClassPoll]; see the client's methods.
type API interface {
	InFlight(ctx context.Context) (map[string]struct{}, error)
	InFlightJobs(ctx context.Context) (map[string]upstream.Job, error)
	ListJobs(ctx context.Context, f upstream.ListFilter) (upstream.JobList, error)
	GetJob(ctx context.Context, id string, class upstream.Class) (upstream.Job, error)
}

// Budget is what the reconciler asks of the upstream budget its API waits for (budget.Shared).
type Budget interface {
	// Available is the number of calls that could start now without waiting.
	Available() float64
}

// DefaultLateWatch is how long after its deadline a timed-out job is polled for a late completion by default.
const DefaultLateWatch = time.Hour

// Config configures a [Reconciler]. Watcher, Deliverer, Leases, API and Budget are required.
type Config struct {
	// Watcher is the process's JOBS watcher, which feeds the index; the caller runs it.
	Watcher *jobs.Watcher
	// Leases is the BRIDGE_LEASES bucket, as natsx.Provision makes it; its TTL is the lease lifetime.
	Leases jetstream.KeyValue
	// Deliverer is the one publish path of results; the reconciler publishes nothing itself.
	Deliverer *jobs.Deliverer
	// API is the budgeted upstream client.
	API API
	// Compactor, when set, moves delivered jobs into the history while this replica holds the lease, a
	// round every PollInterval; the caller made it on the same Watcher.
	Compactor *jobs.Compactor
	// Budget is the budget API waits for: when it has no call free, missed jobs wait for the next
	// sweep, and a job in flight at its deadline times out without a last check.
	Budget Budget

	// PollInterval is the period of the missed-webhook sweep. Default 30s.
	PollInterval time.Duration
	// WebhookGrace is how long a job may be missing from the in-flight list, its webhook still expected,
	// before the reconciler fetches it. Zero means the default, 10s; a negative value means no grace.
	WebhookGrace time.Duration
	// LateWatch is how long after its deadline a timed-out job is still polled for a late completion
	// (published once on results.late.<type>). Default 1h; negative disables the late watch.
	LateWatch time.Duration
	// Adopt declares every job of the account the bridge's business (BRIDGE_ADOPT): each sweep adopts
	// into JOBS (origin adopted) the jobs of the in-flight list, and of the finished list since the last
	// sweep, that have no record, and the reconciler then tracks them like its own. It lists even when
	// nothing is pending, at a cost of the list pages each sweep.
	Adopt bool
	// Workers bounds the concurrent deadline checks, and the concurrent fetches of missed jobs in a sweep
	// (each may wait for upstream budget). Default 4.
	Workers int
	// FinalCheckWait bounds how long the last GET /job/{id} at a deadline may wait for budget when the
	// job was in flight at the last sweep; past it the job times out on what JOBS recorded. Default 5s.
	FinalCheckWait time.Duration

	// PollOnly says submissions carry no webhook URL (BRIDGE_PUBLIC_URL empty): with Export, and while
	// Fidelity says the export is faithful, each sweep is one GET /jobs/export over the window of the
	// pending jobs instead of the in-flight list and a GET per missed job, at an interval that adapts to
	// the jobs in flight and to RPM (see exportEvery).
	PollOnly bool
	// Export is the upstream's export (*upstream.Client): poll-only polls it, and a sweep settles several
	// missed jobs with one call of it. Fidelity says when its rows are faithful (required with Export);
	// RPM is the budget's current rate (budget.Shared.Params().RPM), required with PollOnly.
	Export   batch.Source
	Fidelity *batch.Fidelity
	RPM      func() int

	// Instance names this process in the lease; it must be unique among replicas. Default
	// <hostname>-<random>.
	Instance string
	// LeaseTTL is the lease lifetime without renewal: the bucket TTL of BRIDGE_LEASES. The holder renews
	// every LeaseTTL/3. Default: the bucket's TTL, else 10s.
	LeaseTTL time.Duration

	// Log receives the reconciler's events, tagged component=reconcile.
	Log zerolog.Logger
	// Metrics registers the bridge_reconcile_* collectors; nil registers nothing.
	Metrics prometheus.Registerer
	// Now is the clock; default time.Now. Timers run on real time.
	Now func() time.Time

	// retryMin and retryMax shape the backoff of a deadline check whose delivery fails: retryMin doubled
	// at each failure in a row, at most retryMax. Defaults retryDelay and max(maxRetryDelay,
	// PollInterval); tests shorten them.
	retryMin, retryMax time.Duration
}

func (c *Config) setDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = 30 * time.Second
	}
	switch {
	case c.WebhookGrace == 0:
		c.WebhookGrace = 10 * time.Second
	case c.WebhookGrace < 0:
		c.WebhookGrace = 0
	}
	if c.LateWatch == 0 {
		c.LateWatch = DefaultLateWatch
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.FinalCheckWait == 0 {
		c.FinalCheckWait = 5 * time.Second
	}
	if c.Instance == "" {
		c.Instance = procname.New()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.retryMin == 0 {
		c.retryMin = retryDelay
	}
	if c.retryMax == 0 {
		c.retryMax = max(maxRetryDelay, c.PollInterval)
	}
}

// Validate checks the configuration after defaults are applied; errors wrap [ErrInvalidConfig].
func (c *Config) Validate() error {
	switch {
	case c.Watcher == nil:
		return fmt.Errorf("%w: Watcher: required", ErrInvalidConfig)
	case c.Deliverer == nil:
		return fmt.Errorf("%w: Deliverer: required", ErrInvalidConfig)
	case c.API == nil:
		return fmt.Errorf("%w: API: required", ErrInvalidConfig)
	case c.Budget == nil:
		return fmt.Errorf("%w: Budget: required", ErrInvalidConfig)
	case c.Leases == nil:
		return fmt.Errorf("%w: Leases: required", ErrInvalidConfig)
	case c.PollInterval < 10*time.Millisecond:
		return fmt.Errorf("%w: PollInterval %v: must be at least 10ms", ErrInvalidConfig, c.PollInterval)
	case c.Workers < 1 || c.Workers > 1024:
		return fmt.Errorf("%w: Workers %d: must be 1 to 1024", ErrInvalidConfig, c.Workers)
	case c.FinalCheckWait < 0:
		return fmt.Errorf("%w: FinalCheckWait %v: must not be negative", ErrInvalidConfig, c.FinalCheckWait)
	case c.LeaseTTL < 0 || (c.LeaseTTL > 0 && c.LeaseTTL < 300*time.Millisecond):
		return fmt.Errorf("%w: LeaseTTL %v: must be at least 300ms", ErrInvalidConfig, c.LeaseTTL)
	case c.Export != nil && c.Fidelity == nil:
		return fmt.Errorf("%w: Fidelity: required with Export", ErrInvalidConfig)
	case c.PollOnly && c.Export != nil && c.RPM == nil:
		return fmt.Errorf("%w: RPM: required with PollOnly and Export", ErrInvalidConfig)
	case len(c.Instance) > 256:
		return fmt.Errorf("%w: Instance: longer than 256 bytes", ErrInvalidConfig)
	}
	return nil
}
