//go:build !race

package bridge

// defaultStateJobs is TestStateFollowsTheWorkInFlight's size: issue 22's 30,000 delivered jobs.
const defaultStateJobs = 30_000
