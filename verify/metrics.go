package verify

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/evershield/bridge/internal/promutil"
)

// outcome is what became of a delivery. Settling decides from it; its label ([outcome.String]) is only
// for bridge_verify_outcomes_total{outcome}.
type outcome uint8

// Verifier outcomes.
const (
	outcomePublished outcome = iota + 1
	outcomeAlreadyDelivered
	outcomeLate
	outcomeNotFound
	outcomeNotTerminal
	outcomeRetry
	outcomeExhausted
	outcomeRejected
	outcomeMalformed
	outcomeShutdown
	// outcomeUnknownLaned: a webhook of a job without a JOBS record found no unknown-job token free and
	// moved to the slow lane (slowlane.unknown_job), where it is verified later.
	outcomeUnknownLaned
	// outcomeUnknownShed: unknown-job verification is off; the webhook was dead-lettered as unknown_job.
	outcomeUnknownShed
	// outcomeUnknownWaiting: a webhook of a job without a record or provenance was parked on the slow
	// lane until the unknown-job budget is likely to have a call free.
	outcomeUnknownWaiting
	// outcomeAuthPaused: the upstream refused the key (401, 402, 403); verification pauses for everyone.
	outcomeAuthPaused
	// outcomeAbsent: a webhook of a job without a record or provenance whose id an export window that
	// covers it does not hold: decided without a GET of its own, and dead-lettered as not_found.
	outcomeAbsent
)

// outcomeLabels are the values of bridge_verify_outcomes_total{outcome}.
var outcomeLabels = [...]string{outcomePublished: "published", outcomeAlreadyDelivered: "already_delivered",
	outcomeLate: "late", outcomeNotFound: "not_found", outcomeNotTerminal: "not_terminal", outcomeRetry: "retry",
	outcomeExhausted: "exhausted", outcomeRejected: "rejected", outcomeMalformed: "malformed", outcomeShutdown: "shutdown",
	outcomeUnknownLaned: "unknown_laned", outcomeUnknownShed: "unknown_shed", outcomeUnknownWaiting: "unknown_waiting",
	outcomeAuthPaused: "auth_paused", outcomeAbsent: "absent"}

// String is the outcome's label.
func (o outcome) String() string { return outcomeLabels[o] }

// count counts a delivery's outcome.
func (m *verifyMetrics) count(o outcome) { m.outcomes.WithLabelValues(o.String()).Inc() }

// Dead-letter reasons, the value of the Bridge-Reason header and the last subject token.
const (
	// ReasonNotFound: the upstream answered 404 for the job: a spoofed or foreign job_id.
	ReasonNotFound = "not_found"
	// ReasonAttemptsExhausted: MaxAttempts verifications failed or found the job unfinished. A job with a
	// JOBS record stays pending there, and the reconciler finishes it by polling.
	ReasonAttemptsExhausted = "attempts_exhausted"
	// ReasonUnknownJob: the job has no JOBS record and unknown-job verification is off (UnknownOff): the
	// raw webhook waits here, unverified, for an operator to redrive. (With a budget such a webhook waits
	// in the slow lane, SLOWLANE, instead: no dead letter.)
	ReasonUnknownJob = "unknown_job"
	// ReasonMalformed: the webhook body has no usable job_id.
	ReasonMalformed = "malformed"
	// ReasonUpstreamPrefix + the HTTP status (e.g. upstream_401) is the reason for a final upstream error
	// other than 404.
	ReasonUpstreamPrefix = "upstream_"
)

type verifyMetrics struct {
	outcomes    *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	latency     prometheus.Histogram
	inFlight    prometheus.Gauge
	// limit is the main lane's concurrency limit: fixed, or where the adaptive limit stands.
	limit prometheus.Gauge
	// unknownWaiting is the slow-lane webhooks of this process waiting for an unknown-job token.
	unknownWaiting prometheus.Gauge
	// provenance counts webhooks of jobs without a record verified at the full budget, by how their
	// provenance was established: signature, token or list.
	provenance *prometheus.CounterVec
	// listPages counts GET /jobs pages spent finding such jobs in the account's list.
	listPages prometheus.Counter
	// exportCalls counts GET /jobs/export calls spent verifying in batches, by lane.
	exportCalls *prometheus.CounterVec
	// authPaused is 1 while verification is paused because the upstream refused the key.
	authPaused prometheus.Gauge
}

func newVerifyMetrics(reg prometheus.Registerer) (*verifyMetrics, error) {
	m := &verifyMetrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_verify_outcomes_total",
			Help: "Raw webhooks handled by the verifier, by outcome.",
		}, []string{"outcome"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_deadletter_total",
			Help: "Webhooks published to DEADLETTER, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bridge_verify_duration_seconds",
			Help:    "Time from ingest receiving a webhook to its verified result being published.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_verify_in_flight_webhooks",
			Help: "Raw webhooks being verified right now.",
		}),
		limit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_verify_concurrency_limit_webhooks",
			Help: "How many raw webhooks this process may verify at once: the fixed concurrency, or where the adaptive limit stands (it grows while the upstream's latency stays flat and throughput rises, and shrinks when the latency rises).",
		}),
		provenance: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_verify_provenance_total",
			Help: "Webhooks of jobs without a JOBS record verified at the full budget, by how their provenance was established: signature, token, list (found in the account's job list) or export (found in an export round).",
		}, []string{"via"}),
		listPages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bridge_verify_list_pages_total",
			Help: "GET /jobs pages the verifier spent, from the unknown-job budget, finding jobs without a record in the account's list.",
		}),
		exportCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bridge_verify_export_calls_total",
			Help: "GET /jobs/export calls the verifier spent settling jobs in batches, by lane: main (jobs with a record, when calls are scarce) or unknown (the slow lane, from the unknown-job budget).",
		}, []string{"lane"}),
		authPaused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_verify_auth_paused",
			Help: "1 while verification is paused because the upstream refused the API key (401, 402 or 403): nothing is dead-lettered, every webhook waits.",
		}),
		unknownWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bridge_verify_unknown_waiting_webhooks",
			Help: "Webhooks of jobs without a JOBS record that this process's slow lane holds waiting for the unknown-job budget.",
		}),
	}
	r := promutil.NewRegistrar(reg)
	m.outcomes = promutil.Add(r, m.outcomes)
	m.deadLetters = promutil.Add(r, m.deadLetters)
	// Known reasons start at zero, so increase() sees the first dead letter of each.
	for _, r := range []string{ReasonNotFound, ReasonAttemptsExhausted, ReasonUnknownJob, ReasonMalformed} {
		m.deadLetters.WithLabelValues(r)
	}
	m.latency = promutil.Add(r, m.latency)
	m.inFlight = promutil.Add(r, m.inFlight)
	m.limit = promutil.Add(r, m.limit)
	m.unknownWaiting = promutil.Add(r, m.unknownWaiting)
	m.authPaused = promutil.Add(r, m.authPaused)
	m.provenance = promutil.Add(r, m.provenance)
	for _, via := range []string{"signature", "token", "list", "export"} {
		m.provenance.WithLabelValues(via)
	}
	m.listPages = promutil.Add(r, m.listPages)
	m.exportCalls = promutil.Add(r, m.exportCalls)
	for _, l := range []string{"main", "unknown"} {
		m.exportCalls.WithLabelValues(l)
	}
	return m, r.Err()
}
