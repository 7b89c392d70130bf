// Package bridge holds the two crossings between NATS and the upstream moderation API: the [Verifier],
// which turns raw webhooks into verified results, and the [Submitter], the micro service that accepts
// submissions and answers job-status requests.
//
// The verifier guarantees:
//
//   - only the upstream's own GET /job/{id} answer is ever published, never a webhook body, and only
//     through [jobs.Deliverer.Deliver], so a job's result is on RESULTS at most once (plus at most one
//     late result);
//   - a job whose result is out already (per its JOBS record) is acknowledged without any upstream
//     call, which also protects the budget against floods of duplicate webhooks;
//   - a webhook whose job the upstream does not know (404) costs at most one GET, is never published and
//     is kept in DEADLETTER with its reason; webhooks of jobs without a JOBS record together spend at
//     most their own small budget (VerifierConfig.UnknownRPM), so a flood of forged ids cannot spend
//     the upstream budget without bound nor stall the webhooks of known jobs; those the budget cannot
//     take at once wait in a durable slow lane (deadletter.unknown_job) that the verifier drains
//     itself, so a legitimate job submitted elsewhere still gets its one result;
//   - a raw webhook is acknowledged only after its outcome is durable (result published and recorded,
//     or dead letter stored); until then JetStream redelivers it, across restarts.
//
// The submitter guarantees that a request it can reject itself never reaches the upstream, and that a
// job the upstream accepted is recorded in JOBS before the requester is told its job_id, so the
// reconciler can always finish it.
package bridge
