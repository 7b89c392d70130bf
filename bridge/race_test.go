//go:build race

package bridge

// defaultStateJobs is TestStateFollowsTheWorkInFlight's size under the race detector, which makes a
// compaction about six times slower: the writes and the compaction must end within the test's 30 s
// retention, and 5,000 took 47 s on a loaded 2-core CI machine (15 s on a quiet one). .ci/run runs the
// full 30,000 without it.
const defaultStateJobs = 2_000
