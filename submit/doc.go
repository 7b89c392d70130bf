// Package submit is the submit role: the [Service] is the micro service that accepts submissions on
// moderate.<modality> and answers job-status requests on jobs.status, with idempotency keys.
//
// The service guarantees that a request it can reject itself never reaches the upstream, and that a job
// the upstream accepted is recorded in JOBS before the requester is told its job_id, so the reconciler
// can always finish it.
package submit
