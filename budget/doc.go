// Package budget is the account-wide upstream request budget that every bridge process on the same
// NATS shares.
//
// The upstream allows about 60 requests a minute per account, whatever the number of processes that use
// the key. [Shared] is an [upstream.Limiter] that keeps that limit for all of them together: over any
// window W their calls add up to at most Burst + RPM×W/1min (so RPM+Burst over a minute and RPM/6+Burst
// over ten seconds), for any number of processes. It is the bridge's only token bucket: the upstream
// client holds none of its own, and the verifier's unknown-job budget is a Shared under its own key
// (KeyUnknown). [Unlimited] is the budget of a client that needs none.
//
// # Design: one token bucket in a KV key, leased in small batches
//
// The bucket (level, the time of that level, a 429 pause and the slowdown after it) is one JSON value in
// the KV bucket BRIDGE_BUDGET, under a key per budget ("account"; the unknown-job budget has its own).
// A process that has calls waiting takes tokens from it with one compare-and-set (KV update at the
// revision it last saw): as many as it has callers waiting for, plus, when the rate is high enough to
// make it worthwhile, a few more for the next calls, so a busy process makes one NATS round trip per
// batch, not per call. Every process watches the key, so it knows the level without asking, and a
// conflict costs one retry against the fresh value. Leased tokens are valid for LeaseTTL (at most 1s);
// unused ones lapse and are never given back, which keeps the arithmetic simple and safe: a call in a
// window used a token leased at most LeaseTTL before it, so the bucket's capacity is Burst minus
// RPM×LeaseTTL, and the window bound above holds however the leases fall.
//
// Why this and not the alternatives:
//   - A fixed share per process (RPM/N) wastes an idle process's share and breaks when processes come
//     and go; here there are no shares at all: a busy process takes what an idle one leaves at once,
//     and a process that dies holds at most a second's lapsing lease.
//   - A leader that hands out tokens over request-reply needs an election and stalls for its failover;
//     the KV key has no owner, and its replicas (BRIDGE_REPLICAS) survive node loss like JOBS does.
//   - Asking per call would add a NATS round trip to every upstream call; batches amortise it when the
//     rate is high, and when the rate is low (a token a second) one round trip per call is nothing next
//     to the second the call costs.
//
// # Priority across processes: finish before you start
//
// Within a process, waiting calls are served verification first, then polls, then submissions. Across
// processes the bucket keeps a reserve of one token: a submission may lease only when the level is
// above it, while verifications and polls may take every token. So whenever accepted work is waiting
// anywhere, it takes each token as it comes, the level never reaches two, and new submissions are
// refused within SubmitWait with a *upstream.BusyError (BUSY, with a Retry-After); when no accepted work
// waits, the level passes the reserve within a token's time and submissions use the whole rate.
//
// # 429, clocks, and NATS trouble
//
// A 429 seen by any process pauses the whole bucket (the upstream's Retry-After, else an own back-off
// with jitter) and halves its rate; every process sees the pause through its watch and drops the tokens
// it holds. The rate recovers with evidence: each answer that is not a 429 restores an eighth of it
// (counted locally and carried on the process's next lease, so it costs no write), and with time,
// doubling every RecoverEvery.
//
// Times in the value are the writers' clocks, and the time of the level only ever moves forward, so a
// process whose clock runs behind earns nothing until it catches up, and one whose clock runs ahead
// adds its lead once (at most skew × rate) to the burst, not per lease. Keep processes on NTP.
//
// When NATS cannot be reached, no lease can be taken and no upstream call is made: the budget is never
// exceeded, and nothing is lost, because the work waits durably in JetStream (which is unreachable too).
// Calls resume within a lease round trip of NATS coming back.
//
// All processes must be configured with the same RPM and Burst; the value records the RPM of its last
// writer, and a process that finds another one logs a warning.
//
// # Learning the limit (BRIDGE_API_RPM=auto)
//
// With Config.Auto the budget starts at AutoStartRPM (10/min, below any plan) and learns the account's
// limit from the upstream's headers ([Shared.ObserveLimit], told by the client of every answer that
// carries x-ratelimit-limit, in either contract). The learned limit is stored in the shared value (RPM,
// Learned), so every auto process runs at it from the next watch update, and `bridge status` shows it.
// x-ratelimit-remaining and -reset are stored too, as a cap on the bucket (WindowLeft until WindowEnd):
// no more calls start before the reset than the upstream said remain, less this process's calls still in
// flight. Answers whose reset falls within windowSlack of the stored one describe the same window, and
// only lower the cap; any other starts a new one. That keeps a fixed-window upstream (v2) from ever
// answering 429, also at 20/min; for a token-bucket upstream whose reset is "until full" (v1 with
// headers) it is conservative and still uses the whole rate over a minute. Calls of other processes
// in flight at the start of a window are not subtracted, which the rare 429 then corrects.
package budget
