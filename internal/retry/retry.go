// Package retry holds the bridge's two waiting rules: a sleep that ends with its context, and an
// exponential backoff. Every retry loop of the bridge uses them instead of a copy of its own.
package retry

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends: then it returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Backoff is an exponential backoff: its first wait is Min, and each next one doubles, up to Max. The
// zero value is not usable; Reset starts it over. It is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration

	next time.Duration
}

// Next returns the wait before the next attempt and doubles the one after it.
func (b *Backoff) Next() time.Duration {
	d := max(b.next, b.Min)
	b.next = min(2*d, b.Max)
	return min(d, b.Max)
}

// Reset makes the next wait Min again, after a success.
func (b *Backoff) Reset() { b.next = 0 }

// Wait sleeps for [Backoff.Next], or until ctx ends: then it returns ctx's error.
func (b *Backoff) Wait(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Exp is the ceiling of an exponential backoff's attempt n (1 is the first retry): base·2^(n-1), capped at
// ceil, without overflow.
func Exp(n int, base, ceil time.Duration) time.Duration {
	if n < 1 {
		n = 1
	}
	if shift := n - 1; shift < 32 {
		if c := base << shift; c > 0 && c < ceil {
			return c
		}
	}
	return ceil
}
