//go:build race

package bridge

// defaultStateJobs is TestStateFollowsTheWorkInFlight's size under the race detector, which makes a
// compaction about six times slower; .ci/run runs the full 30,000 without it.
const defaultStateJobs = 5_000
