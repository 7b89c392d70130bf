// Package verify is the verify role: the [Verifier] turns raw webhooks into verified results.
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
//     most their own small budget (Config.UnknownRPM), so a flood of forged ids cannot spend the
//     upstream budget without bound nor stall the webhooks of known jobs; those the budget cannot take
//     at once wait in a durable slow lane (deadletter.unknown_job) that the verifier drains itself, so
//     a legitimate job submitted elsewhere still gets its one result;
//   - a raw webhook is acknowledged only after its outcome is durable (result published and recorded,
//     or dead letter stored); until then JetStream redelivers it, across restarts.
package verify
