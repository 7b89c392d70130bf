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
//     is kept in DEADLETTER with its reason; webhooks of jobs without a JOBS record are verified within
//     the rules of docs/DESIGN.md, "Unknown jobs" (their own budget, Config.UnknownLimiter, and a slow lane);
//   - a raw webhook is acknowledged only after its outcome is durable (result published and recorded,
//     or dead letter stored); until then JetStream redelivers it, across restarts.
package verify
