package ingest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

// benchClient is a keep-alive client with enough idle connections for RunParallel.
func benchClient(srv *httptest.Server) *http.Client {
	c := srv.Client()
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 256
	return c
}

// runIngestBench posts distinct webhooks in parallel to url and reports msgs/s; each gets a 200 only after
// the JetStream ack.
func runIngestBench(b *testing.B, client *http.Client, url string) {
	b.Helper()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := uuid.NewString()
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(webhookBody(id)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Job-Id", id) // only the floor handler reads it
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkIngest measures the real Handler behind the real listener ([Listen]: its timeouts and connection
// bound) over real HTTP into an embedded server reached over TCP, one synchronous ack per webhook.
func BenchmarkIngest(b *testing.B) {
	n := natstest.RunServer(b)
	_, js := natstest.Connect(b, n.ClientURL())
	createWebhooks(b, js, 1)
	h, err := New(Config{Publisher: js, Log: zerolog.Nop(), Metrics: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	s := runListener(b, ServerConfig{Handler: h, Log: zerolog.Nop()})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	runIngestBench(b, client, "http://"+s.Addr().String()+"/webhook/prompt")
}

// BenchmarkIngestFloor is the floor BenchmarkIngest is compared with: a plain handler that reads the body and
// publishes it with the same Nats-Msg-Id (taken from a header, not parsed) and waits for the ack; no checks,
// metrics or logging.
func BenchmarkIngestFloor(b *testing.B) {
	n := natstest.RunServer(b)
	_, js := natstest.Connect(b, n.ClientURL())
	createWebhooks(b, js, 1)
	srv := httptest.NewServer(floorHandler(js))
	b.Cleanup(srv.Close)
	runIngestBench(b, benchClient(srv), srv.URL)
}

// BenchmarkIngestFloorListen is the floor's work (read, publish, answer) behind ingest's listener ([Listen]:
// its timeouts and connection bound): against BenchmarkIngestFloor it prices the listener,
// against BenchmarkIngest the handler.
func BenchmarkIngestFloorListen(b *testing.B) {
	n := natstest.RunServer(b)
	_, js := natstest.Connect(b, n.ClientURL())
	createWebhooks(b, js, 1)
	s := runListener(b, ServerConfig{Handler: floorHandler(js), Log: zerolog.Nop()})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	runIngestBench(b, client, "http://"+s.Addr().String()+"/")
}

// floorHandler is the floor: read the body, publish it with the X-Job-Id header as Nats-Msg-Id, answer
// 200 after the ack.
func floorHandler(js jetstream.JetStream) http.Handler {
	subject := contract.Default.WebhookSubject("prompt")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{jetstream.MsgIDHeader: {r.Header.Get("X-Job-Id")}}}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}
