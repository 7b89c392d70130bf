// Package reconcile is the reconcile role: it makes sure that every job pending in JOBS ends in exactly
// one result, even when its webhook never came, and that several replicas do not multiply upstream
// traffic or results.
//
// What a [Reconciler] guarantees, while one replica holds the lease:
//
//   - Missed webhooks: every PollInterval (and at once when it starts leading) it asks the upstream for
//     the in-flight list (GET /jobs?status=queued,processing, paged, at the poll class), if anything is
//     pending. A pending job missing from that list for longer than WebhookGrace, and still pending in
//     JOBS, is fetched once with GET /job/{id}; a terminal answer is published through
//     [jobs.Deliverer.Deliver] with source poll. A job found missing is re-checked when its grace ends
//     (no new list needed), so a missed webhook is published within one poll interval plus the grace of
//     the job leaving the list. Upstream cost of a sweep: the list's pages plus one GET per job actually
//     missed; a sweep stops early when the budget has no token left and leaves the rest to the next
//     one. A 404 is counted and logged, and asked about again a poll interval later: only three 404s in a
//     row, a poll interval apart, end the sweeps' fetches and leave the job to its deadline check. Jobs
//     in the list that JOBS does not know are ignored. A job whose webhook arrived but is still pending (the verifier is
//     retrying) is treated like any other; the Deliverer keeps the result single.
//   - Deadlines: at a job's deadline one last GET /job/{id}; terminal → delivered (source poll), else
//     [jobs.Deliverer.TimeOut] publishes the timeout result (status failed, error_code
//     BRIDGE_TIMEOUT, source timeout) with that answer or, without one, what JOBS recorded last. The last
//     GET is skipped when the budget has no token and the job was in flight at the last sweep, and made
//     also for a job the sweeps gave up on after its 404s. When the publish fails (RESULTS full, JOBS
//     unwritable) the check runs again after a backoff, 2 s doubling to 2 min (or PollInterval if
//     longer), each time with a new last GET; the job counts in bridge_reconcile_deliver_failing
//     meanwhile, and finishes or times out once publishing works again.
//   - Late results: a timed-out job stays on a late watch for LateWatch (default 1h) after its deadline.
//     Sweeps treat it like a pending job (in the list: nothing to do; missing past the grace: one GET),
//     so a late completion reaches results.late.<type> once even when its webhook was lost too. A late
//     webhook reaches it through the verifier and the same Deliverer. The cost is one GET per late job
//     that leaves the in-flight list, nothing while it stays in it.
//   - Start-up: the process's [jobs.Watcher] replays the bucket (again whenever its watch stops following
//     the bucket), so every job left pending is in the index before the leader acts. Overdue deadlines
//     fire at once, after the first sweep has marked what is in flight, with at most Workers checks at a
//     time: their GETs are paced by the upstream budget instead of being fired in a burst.
//   - Replicas: one lease key ("reconcile") in BRIDGE_LEASES, whose bucket TTL is LeaseTTL. Acquire is
//     kv.Create (value = Instance), renewal every LeaseTTL/3 is kv.Update on the held revision; each
//     renewal is a new message, so the bucket's TTL (a message age) restarts from it. A crashed holder's
//     key expires after LeaseTTL and a standby, retrying Create every LeaseTTL/4, takes over; a clean
//     stop deletes the key (at its revision) and a standby watching it takes over at once. A holder that
//     finds another revision, or cannot renew for 2/3 of LeaseTTL, stops acting at once. Followers keep
//     their index warm from the same watch, so a takeover needs no rebuild.
//
// # Why an in-process index
//
// The pending jobs are held in memory: a map by job_id and a min-heap by due time with one timer for the
// earliest deadline, fed by the process's [jobs.Watcher] (a replay of the bucket, then updates; deletes,
// purges and records that are no longer pending leave the index). Alternatives considered:
//
//   - Per-key TTL in JOBS (KV LimitMarkerTTL, nats-server 2.11+): the expiry deletes the record, but a
//     timeout needs the record (and a last GET) to publish, and a delivered record may leave JOBS only
//     once its id is in the history (docs/DESIGN.md, History), which a TTL does not wait for.
//   - Scheduled messages (nats-server 2.12+): need a stream of their own and a message per job, which
//     must be cancelled or ignored when the result comes first, and would raise the oldest server the
//     bridge runs on from 2.11 to 2.12.
//   - Rescanning the bucket every tick: O(pending) KV reads per tick, which does not scale to a million
//     jobs.
//
// The watch rebuilds the index on every start anyway (recovery needs the full pending set), deadlines
// then fire from memory within the timer's precision, and a sweep's comparison with the in-flight list
// is a map walk. An entry keeps only what the decisions need (id, interned modality, due time,
// submitted time, first-missing time, flags): see BenchmarkIndex for the measured bytes per job.
package reconcile
