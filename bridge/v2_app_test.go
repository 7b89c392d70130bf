package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	cenv "github.com/caarlos0/env/v11"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"
)

// lossyProxy forwards every webhook to the bridge, but answers the first attempt of each delivery 503
// whatever the bridge said, as if the answer were lost on the way back: the v2 upstream retries it.
type lossyProxy struct {
	target string // the bridge's base URL
	mu     sync.Mutex
	seen   map[string]bool // delivery ids answered once
}

func (p *lossyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	id := r.Header.Get(contract.UpstreamHeaderDeliveryID)
	p.mu.Lock()
	first := !p.seen[id]
	p.seen[id] = true
	p.mu.Unlock()
	if first {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(resp.StatusCode)
}

// TestV2SignedRetriedWebhooksCollapse runs the application against a v2 upstream that signs its
// webhooks and retries them, some also sent twice. Every first answer is lost, so every webhook comes
// at least twice: each job still has exactly one result, WEBHOOKS keeps one message per job, and that
// message carries its provenance (signature) and the delivery id for tracing.
func TestV2SignedRetriedWebhooksCollapse(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{Seed: 7, DuplicateRate: 0.3, WebhookRetryScale: 0.001,
		QueueDelay: 10 * time.Millisecond, ProcessDelay: 50 * time.Millisecond}, simtest.WithContract(simulator.ContractV2))
	proxy := &lossyProxy{seen: map[string]bool{}}
	ps := httptest.NewServer(proxy)
	t.Cleanup(ps.Close)

	cfg, err := cenv.ParseAsWithOptions[Config](cenv.Options{Prefix: EnvPrefix, Environment: map[string]string{
		"BRIDGE_DATA_DIR": t.TempDir(), "BRIDGE_NATS_LISTEN": "127.0.0.1:-1", "BRIDGE_HTTP_ADDR": "127.0.0.1:0",
		"BRIDGE_API_URL": sim.URL(), "BRIDGE_API_KEY": simulator.DefaultKey, "BRIDGE_API_RPM": "60000",
		"BRIDGE_PUBLIC_URL": ps.URL, "BRIDGE_WEBHOOK_SECRET": sim.WebhookSecret(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), WithReconcileInstance("v2-test"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	proxy.target = "http://" + a.Addr().String()

	nc, js := natstest.Connect(t, a.Server().ClientURL(), opsUser(t, cfg)) // the test reads WEBHOOKS
	const n = 12
	ids := make([]string, 0, n)
	for i := range n {
		natstest.WaitFor(t, 10*time.Second, func() error { // the roles start concurrently
			rep, _, err := ops.Submit(natstest.CtxWithin(t, 5*time.Second), nc, ops.SubmitRequest{Modality: "prompt", Fields: map[string]string{"prompt": fmt.Sprint("retried ", i)}})
			if err == nil {
				ids = append(ids, rep.JobID)
			}
			return err
		})
	}
	natstest.WaitFor(t, 30*time.Second, func() error {
		st := sim.Stats().Webhooks
		// Every first attempt failed at the proxy (after the bridge stored it) and was retried.
		if st.Retries < n || st.Delivered < n {
			return fmt.Errorf("webhooks: %d retries, %d delivered; want at least %d each", st.Retries, st.Delivered, n)
		}
		if got := len(natstest.StreamMsgs(t, js, contract.Default.StreamResults)); got < n {
			return fmt.Errorf("%d results, want %d", got, n)
		}
		return nil
	})

	if dup := testworld.CounterValue(t, a.Metrics(), testworld.Series{Name: "bridge_ingest_webhooks_total", Label: "outcome", Value: "duplicate"}); dup < n {
		t.Fatalf("ingest saw %v duplicates, want at least %d (every webhook came twice)", dup, n)
	}
	results := testworld.ResultIDs(t, natstest.StreamMsgs(t, js, contract.Default.StreamResults))
	hooks := natstest.StreamMsgs(t, js, contract.Default.StreamWebhooks)
	if len(results) != n || len(hooks) != n {
		t.Fatalf("%d jobs with results and %d stored webhooks, want %d each", len(results), len(hooks), n)
	}
	for _, id := range ids {
		if results[id] != 1 {
			t.Fatalf("job %s has %d results, want 1", id, results[id])
		}
	}
	for _, m := range hooks {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if m.Header.Get(contract.HeaderAuthenticated) != contract.AuthenticatedSignature || m.Header.Get(contract.HeaderDeliveryID) != "wh_"+id {
			t.Fatalf("stored webhook of %s: %s %q, %s %q", id, contract.HeaderAuthenticated, m.Header.Get(contract.HeaderAuthenticated),
				contract.HeaderDeliveryID, m.Header.Get(contract.HeaderDeliveryID))
		}
	}
}
