package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/testlog"
)

// TestRunFlushesTracesOnShutdown runs bridge run (ingest) with OTEL_EXPORTER_OTLP_ENDPOINT set: a webhook
// with a traceparent is a span of the sender's trace, and the span reaches the collector by the time run
// returns after its ctx ended (as on SIGTERM), well before the batch's own 5 s schedule.
func TestRunFlushesTracesOnShutdown(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, b...)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(collector.Close)
	httpAddr := freeAddr(t)
	env := map[string]string{
		"BRIDGE_ROLES": "ingest", "BRIDGE_DATA_DIR": t.TempDir(), "BRIDGE_NATS_LISTEN": freeAddr(t), "BRIDGE_HTTP_ADDR": httpAddr,
		"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL, "OTEL_SERVICE_NAME": "bridge-under-test",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, env, &bytes.Buffer{}, &testlog.Buffer{}) }()
	base := "http://" + httpAddr
	waitReady(t, http.DefaultClient, base)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, base+"/webhook/image", strings.NewReader(`{"job_id":"0b6f7a52-5c1e-4d0b-8f43-3f1b2f7e9a11"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook status %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	id, _ := hex.DecodeString(traceID)
	mu.Lock()
	defer mu.Unlock()
	for _, want := range [][]byte{id, []byte("POST /webhook"), []byte("bridge-under-test")} {
		if !bytes.Contains(got, want) {
			t.Errorf("the collector got no %q by the time run returned (%d bytes)", want, len(got))
		}
	}
}
