package jobs

import "time"

// Test hooks of OncePublisher and Deliverer, for the external tests of this package.

// SetTakeoverAfter sets how old a claim without done must be before p takes it over.
func (p *OncePublisher) SetTakeoverAfter(d time.Duration) { p.takeoverAfter = d }

// SetAfterClaim makes p call f between its claim and its result (a place to stop a publisher).
func (p *OncePublisher) SetAfterClaim(f func(fence string, claim uint64)) { p.afterClaim = f }

// SetSkipDone makes p leave the done message out, as a publisher that stopped right after its result.
func (p *OncePublisher) SetSkipDone(skip bool) { p.skipDone = skip }

// SetScanByGet sets up to how many stream messages a takeover reads one by one (more: by a consumer).
func (p *OncePublisher) SetScanByGet(n uint64) { p.scanByGet = n }

// SetBeforePublish makes d call f before every result publish (a place to pause a deliverer).
func (d *Deliverer) SetBeforePublish(f func(id string)) { d.beforePublish = f }

// SetAfterAdd makes c call f after a round's ids are in the history and before anything is removed;
// an error stops the round there, as a crash would.
func (c *Compactor) SetAfterAdd(f func() error) { c.afterAdd = f }
