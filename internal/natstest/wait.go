package natstest

import (
	"context"
	"testing"
	"time"
)

// WaitFor retries fn every 20ms until it returns nil, failing the test with fn's last error after timeout.
func WaitFor(tb testing.TB, timeout time.Duration, fn func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("natstest: condition not met within %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RecvWithin receives one value from ch, failing the test if none comes within d.
func RecvWithin[T any](tb testing.TB, ch <-chan T, d time.Duration) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		tb.Fatalf("natstest: nothing received within %v", d)
		var zero T
		return zero
	}
}

// Timeout bounds the context of a test that names no deadline of its own.
const Timeout = 60 * time.Second

// Ctx is a context that ends after [Timeout] or with the test.
func Ctx(tb testing.TB) context.Context { return CtxWithin(tb, Timeout) }

// CtxWithin is a context that ends after d or with the test.
func CtxWithin(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}
