package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/ingesttest"
	"github.com/evershield/bridge/internal/natstest"
)

// waitReady waits until /readyz answers 200.
func waitReady(tb testing.TB, base string) {
	tb.Helper()
	natstest.WaitFor(tb, 30*time.Second, func() error {
		if st := ingesttest.Status(base + "/readyz"); st != http.StatusOK {
			return fmt.Errorf("/readyz %d", st)
		}
		return nil
	})
}

// TestReadyMeansEveryRoleServes starts the whole bridge again and again, polls /readyz as a client would,
// and sends moderate.prompt the instant it first answers 200: the request always finds the submit service
// (never "no responders"), because readiness waits for every role, the service's subscriptions flushed to
// the server included.
func TestReadyMeansEveryRoleServes(t *testing.T) {
	const starts = 24
	cfg := testConfig(t)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	nc, _ := natstest.Connect(t, cfg.NATSURL)
	for i := range starts {
		ctx, cancel := context.WithCancel(context.Background())
		a, err := New(ctx, cfg, zerolog.Nop())
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		runErr := make(chan error, 1)
		go func() { runErr <- a.Run(ctx) }()
		base := "http://" + a.Addr().String()
		// As fast as a client polls: no pause between tries.
		for deadline := time.Now().Add(30 * time.Second); ingesttest.Status(base+"/readyz") != http.StatusOK; {
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("start %d: /readyz not 200 within 30s", i)
			}
		}
		_, err = nc.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{}`), 5*time.Second)
		cancel()
		if rerr := natstest.RecvWithin(t, runErr, 60*time.Second); rerr != nil {
			t.Fatalf("start %d: Run: %v", i, rerr)
		}
		if errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("start %d: moderate.prompt sent the instant /readyz answered 200: %v", i, err)
		}
		if err != nil {
			t.Fatalf("start %d: moderate.prompt: %v", i, err)
		}
	}
}
