package batch

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// CheckEvery is how often [Fidelity] asks the upstream whether the account has custom categories.
const CheckEvery = 10 * time.Minute

// Fidelity says whether an export row is as faithful as GET /job: only while the account has no custom
// categories, which the CSV lacks. Its reading of GET /me/moderation-config (whose documented answer does
// not say where custom categories appear): catalogue keys beyond the built-in ones are custom categories.
// It checks at start and every CheckEvery; a GET /job that shows a non-empty custom object turns batches
// off at once, until the next check. Until the first check answers, batches are off. It is safe for
// concurrent use.
type Fidelity struct {
	// Check reports whether the account has custom categories (upstream.Client.ModerationConfig, then
	// Custom()).
	Check func(ctx context.Context) (bool, error)
	Log   zerolog.Logger

	mu       sync.Mutex
	faithful bool
	checked  bool
	once     sync.Once
	first    chan struct{} // closed at the first answer
}

// Checked is closed once the first check has answered.
func (f *Fidelity) Checked() <-chan struct{} {
	f.once.Do(func() { f.first = make(chan struct{}) })
	return f.first
}

// Faithful reports whether batches may run now.
func (f *Fidelity) Faithful() bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.faithful
}

// SawCustom turns batches off until the next check: a GET /job showed custom categories.
func (f *Fidelity) SawCustom() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.faithful {
		f.Log.Info().Msg("a job carries custom categories, which the export lacks: batch verification off until the next check")
	}
	f.faithful = false
}

// Failed turns batches off until the next check: an export call failed (the upstream may not serve it,
// or answers what the client does not read), so callers fall back to GET /job meanwhile.
func (f *Fidelity) Failed(err error) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.faithful {
		f.Log.Warn().Err(err).Msg("export failed: batch verification off until the next check; jobs are verified with GET /job")
	}
	f.faithful = false
}

// Run checks at once and every CheckEvery until ctx ends; a failed check keeps what the last one found
// and is tried again after a minute, doubling up to CheckEvery.
func (f *Fidelity) Run(ctx context.Context) {
	retry := time.Minute
	for {
		wait := CheckEvery
		custom, err := f.Check(ctx)
		if ctx.Err() != nil {
			return
		}
		f.mu.Lock()
		switch {
		case err != nil:
			wait, retry = retry, min(2*retry, CheckEvery)
			f.Log.Warn().Err(err).Dur("retry_in", wait).Msg("check the account's custom categories (GET /me/moderation-config)")
		case custom && (f.faithful || !f.checked):
			f.Log.Info().Msg("the account has custom categories, which the export lacks: every job is verified with GET /job")
		case !custom && !f.faithful:
			f.Log.Info().Msg("the account has no custom categories: jobs are verified in batches (GET /jobs/export) when calls are scarce")
		}
		first := err == nil && !f.checked
		if err == nil {
			f.faithful, f.checked, retry = !custom, true, time.Minute
		}
		f.mu.Unlock()
		if first {
			f.Checked()
			close(f.first)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
