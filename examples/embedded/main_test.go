package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/bridge"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestEmbeddedBridgeVerifiesAWebhookThroughTheProgramsServer runs the program with its own nats-server
// and the simulator as the upstream, submits a job over NATS, and sees the upstream's webhook come in
// through the program's own server (its path, not the bridge's) and leave as a verified result on
// results.>; the program's /metrics carries the bridge's series beside its own. Then it stops the
// program, which returns nil and closes its port.
func TestEmbeddedBridgeVerifiesAWebhookThroughTheProgramsServer(t *testing.T) {
	sim := simtest.Run(t, simulator.Config{})
	bcfg := bridge.DefaultConfig()
	bcfg.APIURL, bcfg.APIKey, bcfg.APIRPM = sim.URL(), simulator.DefaultKey, 6000
	type addrs struct{ http, nats string }
	started := make(chan addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Listen: "127.0.0.1:0", NATSListen: "127.0.0.1:-1", StoreDir: t.TempDir(), Bridge: bcfg,
			Log:     zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
			Started: func(h, n string) { started <- addrs{h, n} }})
	}()
	var at addrs
	select {
	case at = <-started:
	case err := <-done:
		t.Fatalf("the program stopped before it started: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the program did not start within 30s")
	}
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			natstest.RecvWithin(t, done, 30*time.Second)
		}
	}()
	base := "http://" + at.http
	nc, _ := natstest.Connect(t, at.nats)
	results := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe("results.>", results); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 30*time.Second, func() error {
		if code, body := get(t, base+"/bridge/readyz"); code != http.StatusOK {
			return fmt.Errorf("/bridge/readyz: %d %s", code, body)
		}
		return nil
	})

	reply, err := nc.Request("moderate.prompt", []byte(`{"prompt":"is this fine?"}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var job struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal(reply.Data, &job); err != nil || job.JobID == "" {
		t.Fatalf("moderate.prompt reply %s: %v", reply.Data, err)
	}

	msg := natstest.RecvWithin(t, results, 30*time.Second)
	var result struct {
		JobID  string `json:"job_id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(msg.Data, &result); err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "results.prompt" || msg.Header.Get("Bridge-Source") != "webhook" || result.JobID != job.JobID ||
		result.Status != "completed" {
		t.Errorf("result on %s (Bridge-Source %q): %s; want results.prompt, webhook, job %s completed",
			msg.Subject, msg.Header.Get("Bridge-Source"), msg.Data, job.JobID)
	}
	// The simulator records a webhook once it has its answer, which may be after the result is out.
	natstest.WaitFor(t, 10*time.Second, func() error {
		hooks := sim.Webhooks(job.JobID)
		if want := base + "/hooks/moderation/webhook/prompt"; len(hooks) != 1 || hooks[0].URL != want || hooks[0].Status != http.StatusOK {
			return fmt.Errorf("the upstream's webhooks %+v, want one to %s answered 200", hooks, want)
		}
		return nil
	})
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{"\nbridge_ingest_webhooks_total{outcome=\"accepted\"} 1\n", "\nbridge_ready 1\n", "\ngo_goroutines "} {
		if !strings.Contains(metrics, want) {
			t.Errorf("the program's /metrics lacks %q", strings.TrimSpace(want))
		}
	}

	cancel()
	stopped = true
	if err := natstest.RecvWithin(t, done, 30*time.Second); err != nil {
		t.Fatalf("the program stopped with %v, want nil", err)
	}
	if _, err := http.Get(base + "/"); err == nil {
		t.Errorf("the program's server still answers after Run returned")
	}
}

func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
