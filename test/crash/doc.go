// Package crash is the crash and fault suite (issue 7). Its tests build the bridge binary once, run it as
// a child process against NATS servers and an upstream simulator started in the test process, inject a
// fault while a steady load of submissions and webhooks runs, and then check the promise end to end:
// every job whose webhook was answered 2xx, and every job the bridge accepted over moderate.*, has
// exactly one result on results.<type>; no job has two; no forged webhook becomes a result.
//
// Every scenario runs against a simulator of each upstream contract (subtests v1 and v2, see
// eachContract): under v2 the simulator signs its webhooks and retries them on failure, submissions over
// moderate.prompt go to /moderate/text, and the bridge finds the contract itself (BRIDGE_API_CONTRACT
// auto). The bridge-kill scenario runs v2 on a single node only.
//
// Each scenario states its bound in its doc comment; the bound is the deadline of the wait on the
// condition, never a sleep. The default run fits the CI budget; `go test ./test/crash -soak` runs the
// longer variants (more crashes, longer outages, more load).
//
// The pause case (TestPausedProcessPublishesOnce) reaches the dangerous points of a result's publish
// path through the binary's test-only BRIDGE_TEST_FAILPOINT=<before-publish|after-publish>:<file>: the
// process writes the job's id to the file and blocks until the test removes it, so a SIGSTOP lands
// exactly there. The variable is read by `bridge run` only and is not part of the configuration; a
// deployment must never set it. Its pauses outlast the duplicate window: those sleeps are the fault
// being injected, not waits for a condition.
//
// The compaction case (TestCompactionCrashLosesAndDoublesNothing) uses the compactor's failpoints,
// BRIDGE_TEST_FAILPOINT=<compact-after-history|compact-after-remove>:<file>: the process blocks in the
// middle of a compaction round and the test SIGKILLs it there, restarts it, and checks that every job is
// in the history, and that re-posted and replayed webhooks of the compacted jobs give no second result.
//
// The namespace case (TestTwoNamespacedProcessesShareOneServer) runs two processes side by side on one
// nats-server and one simulator account, one without a namespace and one with BRIDGE_NAMESPACE=staging, and
// checks that neither sees the other's jobs and that together they stay within the account. It injects no
// fault and runs against v1 only: namespaces rename subjects and streams, whatever the upstream's contract.
//
// The upgrade case (TestOldAndNewSideBySide) runs an earlier release beside this one: it builds that
// release's cmd/bridge from the repository's git history (git archive of a fixed revision, into a
// temporary directory), and skips, saying so, when the repository lacks that history (a shallow clone).
package crash
