package reconcile

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/internal/promutil"
)

// metrics are the bridge_reconcile_* collectors.
type metrics struct {
	pending       *prometheus.GaugeVec
	oldest        prometheus.Gauge
	lateWatched   prometheus.Gauge
	sweeps        *prometheus.CounterVec
	sweepDuration prometheus.Histogram
	calls         prometheus.Histogram
	recovered     prometheus.Counter
	lateRecovered prometheus.Counter
	timeouts      prometheus.Counter
	notFound      prometheus.Counter
	leader        prometheus.Gauge
	errors        *prometheus.CounterVec
	// deliverFailing counts the pending jobs whose last deadline check could not publish.
	deliverFailing prometheus.Gauge
	// adopted counts jobs of the account given a record with Adopt.
	adopted prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "bridge", "reconcile"
	m := &metrics{
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "pending_jobs",
			Help: "Pending jobs in the reconciler's index, by modality."}, []string{"modality"}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "oldest_pending_age_seconds",
			Help: "Age of the oldest pending job at the last sweep (0 when none or not leader)."}),
		lateWatched: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "late_watch_jobs",
			Help: "Timed-out jobs still polled for a late completion."}),
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sweeps_total",
			Help: "Missed-webhook sweeps by result: ok, skipped (nothing pending), error (in-flight list failed)."}, []string{"result"}),
		sweepDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "sweep_duration_seconds",
			Help: "Duration of a sweep, upstream calls and budget waits included.", Buckets: prometheus.ExponentialBuckets(0.005, 3, 10)}),
		calls: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "upstream_calls_per_sweep",
			Help:    "Upstream calls of one sweep: in-flight list pages (estimated at 100 ids a page) plus GET /job calls.",
			Buckets: []float64{0, 1, 2, 5, 10, 20, 50, 100, 200, 500}}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "missed_webhooks_recovered_total",
			Help: "Results the reconciler published (source poll) because no webhook delivered them."}),
		adopted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "adopted_total",
			Help: "Jobs of the account the bridge had no record of, adopted into JOBS (BRIDGE_ADOPT=true)."}),
		lateRecovered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "late_recovered_total",
			Help: "Late results of timed-out jobs the reconciler published on results.late.<type>."}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "timeouts_total",
			Help: "Timeout results published for jobs past their deadline."}),
		notFound: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "upstream_not_found_total",
			Help: "404 answers of the upstream for pending jobs; after three in a row the job is left to its deadline check."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "is_leader",
			Help: "1 while this process holds the reconcile lease."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Errors by operation: inflight, export, get_job, deliver, timeout, watch, lease."}, []string{"op"}),
		deliverFailing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "deliver_failing",
			Help: "Pending jobs past their deadline whose result could not be published at the last check; retried with backoff."}),
	}
	// Known label values start at zero, so increase() and rate() see the first error.
	for _, op := range []string{"inflight", "export", "get_job", "deliver", "timeout", "watch", "lease"} {
		m.errors.WithLabelValues(op)
	}
	for _, r := range []string{"ok", "skipped", "error"} {
		m.sweeps.WithLabelValues(r)
	}
	r := promutil.NewRegistrar(reg)
	m.pending, m.oldest, m.lateWatched = promutil.Add(r, m.pending), promutil.Add(r, m.oldest), promutil.Add(r, m.lateWatched)
	m.sweeps, m.sweepDuration, m.calls = promutil.Add(r, m.sweeps), promutil.Add(r, m.sweepDuration), promutil.Add(r, m.calls)
	m.recovered, m.adopted, m.lateRecovered = promutil.Add(r, m.recovered), promutil.Add(r, m.adopted), promutil.Add(r, m.lateRecovered)
	m.timeouts, m.notFound, m.leader = promutil.Add(r, m.timeouts), promutil.Add(r, m.notFound), promutil.Add(r, m.leader)
	m.errors, m.deliverFailing = promutil.Add(r, m.errors), promutil.Add(r, m.deliverFailing)
	return m, r.Err()
}
