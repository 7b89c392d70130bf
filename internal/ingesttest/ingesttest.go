// Package ingesttest runs ingest's real listener in tests outside the ingest package, and asks a bridge's
// HTTP side.
package ingesttest

import (
	"context"
	"net/http"
	"testing"

	"github.com/evershield/bridge/ingest"
)

// Serve runs ingest's listener built from scfg on a loopback port until the test ends, and returns its
// base URL. Addr is always 127.0.0.1:0.
func Serve(tb testing.TB, scfg ingest.ServerConfig) string {
	tb.Helper()
	scfg.Addr = "127.0.0.1:0"
	s, err := ingest.Listen(scfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("ingest server: %v", err)
		}
	})
	return "http://" + s.Addr().String()
}

// Status is the status of a GET of url (a bridge's /readyz, say); 0 when it fails.
func Status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
