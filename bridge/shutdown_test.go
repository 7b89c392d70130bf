package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

// TestSIGTERMUnderLoadLosesNoWebhook is a rolling restart as Kubernetes makes one: 8 clients post webhooks
// without pause, and the process is told to stop (SIGTERM cancels Run's context) 1 s in, with a 2 s shutdown
// delay (the 2 s and 5 s, scaled down). /readyz answers 503 at once; every request begun before the
// delay ended gets 200, none gets a connection error, and every webhook answered 200 is in WEBHOOKS.
func TestSIGTERMUnderLoadLosesNoWebhook(t *testing.T) {
	const (
		clients   = 8
		termAfter = time.Second
		delay     = 2 * time.Second
		// margin keeps the clients' last requests clear of the instant the listener closes: a connection
		// dialled in that instant is refused by any server.
		margin = 200 * time.Millisecond
		// pace is each client's pause between webhooks (8 clients: well over a thousand a second, far
		// beyond an account's real load); maxPerClient bounds the loop.
		pace         = 5 * time.Millisecond
		maxPerClient = 2000
	)
	cfg := testConfig(t)
	cfg.Roles, cfg.ShutdownDelay = []string{RoleIngest}, delay
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	base := "http://" + a.Addr().String()
	waitReady(t, base)

	start := time.Now()
	stopPosting := start.Add(termAfter + delay - margin)
	var (
		mu       sync.Mutex
		accepted []string
		failures []string
		wg       sync.WaitGroup
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{}, Timeout: 15 * time.Second}
			defer client.CloseIdleConnections()
			for i := 0; i < maxPerClient && time.Now().Before(stopPosting); i++ {
				id := uuid.NewString()
				st, err := postWebhook(client, base, id)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, fmt.Sprintf("%v after %v: %v", id, time.Since(start).Round(time.Millisecond), err))
				case st != http.StatusOK:
					failures = append(failures, fmt.Sprintf("%v after %v: status %d", id, time.Since(start).Round(time.Millisecond), st))
				default:
					accepted = append(accepted, id)
				}
				mu.Unlock()
				time.Sleep(pace)
			}
		}()
	}
	time.Sleep(termAfter) // the load runs; this is the moment of SIGTERM, not a synchronisation
	cancel()
	natstest.WaitFor(t, time.Second, func() error {
		if st := getStatus(base + "/readyz"); st != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz %d after SIGTERM, want 503", st)
		}
		return nil
	})
	wg.Wait()
	if err := natstest.RecvWithin(t, runErr, 60*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests begun before the delay ended failed; first: %s", len(failures),
			len(failures)+len(accepted), failures[0])
	}
	if len(accepted) < clients {
		t.Fatalf("only %d webhooks accepted: the load did not run", len(accepted))
	}
	stored := storedWebhookIDs(t, cfg.NATSURL)
	for _, id := range accepted {
		if !stored[id] {
			t.Fatalf("webhook %s answered 200 but not in %s", id, contract.Default.StreamWebhooks)
		}
	}
	t.Logf("%d webhooks accepted across SIGTERM and the %v delay, all stored", len(accepted), delay)
}

// postWebhook posts a webhook of job id and returns the status.
func postWebhook(client *http.Client, base, id string) (int, error) {
	resp, err := client.Post(base+"/webhook/prompt", "application/json",
		strings.NewReader(`{"job_id":"`+id+`","status":"completed"}`))
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// getStatus is the status of a GET of url; 0 when it fails.
func getStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady waits until /readyz answers 200.
func waitReady(tb testing.TB, base string) {
	tb.Helper()
	natstest.WaitFor(tb, 30*time.Second, func() error {
		if st := getStatus(base + "/readyz"); st != http.StatusOK {
			return fmt.Errorf("/readyz %d", st)
		}
		return nil
	})
}

// storedWebhookIDs reads the job ids (Nats-Msg-Id) of every message in WEBHOOKS.
func storedWebhookIDs(tb testing.TB, url string) map[string]bool {
	tb.Helper()
	_, js := natstest.Connect(tb, url)
	ctx := natstest.Ctx(tb)
	s, err := js.Stream(ctx, contract.Default.StreamWebhooks)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	ids := make(map[string]bool, info.State.Msgs)
	for read := uint64(0); read < info.State.Msgs; {
		batch, err := c.Fetch(int(min(1000, info.State.Msgs-read)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			tb.Fatalf("read %s: %v", contract.Default.StreamWebhooks, err)
		}
		for msg := range batch.Messages() {
			ids[msg.Headers().Get(nats.MsgIdHdr)] = true
			read++
		}
		if err := batch.Error(); err != nil {
			tb.Fatalf("read %s: %v", contract.Default.StreamWebhooks, err)
		}
	}
	return ids
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
		for deadline := time.Now().Add(30 * time.Second); getStatus(base+"/readyz") != http.StatusOK; {
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
