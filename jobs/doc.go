// Package jobs holds the JOBS record of every job the bridge tracks, the process's one watch of them
// ([Watcher]) and the one path by which a result reaches RESULTS. Both the verifier and the reconciler
// deliver through [Deliverer], so the rules that keep results single live in one place:
//
//   - every result is published with Nats-Msg-Id = job_id (a late one with job_id + ".late"), so racing
//     publishers collapse inside the duplicate window;
//   - every result goes through its fence, bridge.result.<job_id> ([OncePublisher], once.go: a claim, the
//     result stored only while the claim is the fence's last message, a done message naming it), so a
//     second result is refused by the stream itself, after the window too and from a paused process;
//   - the JOBS record is updated with compare-and-set only after the publish was acknowledged, and it
//     records which publish won (the fence names it when another publish was first), so a
//     job whose result went out is never published again, even after the window;
//   - a job timed out by the bridge and completed by the upstream later gets its verified result once
//     more, on results.late.<type>, and never a second time on results.<type>.
package jobs
