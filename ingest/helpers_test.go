package ingest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

// createWebhooks creates the WEBHOOKS stream as DESIGN.md describes it, with the given replicas.
func createWebhooks(tb testing.TB, js jetstream.JetStream, replicas int) jetstream.Stream {
	tb.Helper()
	s, err := js.CreateStream(natstest.Ctx(tb), jetstream.StreamConfig{
		Name:       contract.Default.StreamWebhooks,
		Subjects:   []string{contract.Default.SubjectWebhooks + ">"},
		Duplicates: 20 * time.Minute,
		Storage:    jetstream.FileStorage,
		Replicas:   replicas,
	})
	if err != nil {
		tb.Fatalf("create stream %s: %v", contract.Default.StreamWebhooks, err)
	}
	return s
}

// harness is a Handler on a real embedded server, behind a real HTTP server.
type harness struct {
	h      *Handler
	url    string
	nc     *nats.Conn
	js     jetstream.JetStream
	client *http.Client
}

// newHarness connects to urls and serves a Handler built from cfg behind the real listener ([Listen]);
// cfg.Publisher defaults to the connection's JetStream, Log and Metrics are always the test's own.
func newHarness(tb testing.TB, urls string, cfg Config) *harness {
	tb.Helper()
	nc, js := natstest.Connect(tb, urls)
	if cfg.Publisher == nil {
		cfg.Publisher = js
	}
	cfg.Metrics = prometheus.NewRegistry()
	cfg.Log = zerolog.New(zerolog.NewTestWriter(tb))
	if _, fuzz := tb.(*testing.F); fuzz {
		cfg.Log = zerolog.Nop() // the handler outlives each fuzz input's *testing.T
	}
	h, err := New(cfg)
	if err != nil {
		tb.Fatalf("new handler: %v", err)
	}
	s := runListener(tb, ServerConfig{Handler: h, Log: cfg.Log, MaxBody: cfg.MaxBody})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	tb.Cleanup(client.CloseIdleConnections)
	return &harness{h: h, url: "http://" + s.Addr().String(), nc: nc, js: js, client: client}
}

// request is one HTTP request of a test; the zero Method is POST and the zero ContentType application/json.
type request struct {
	Method      string
	Path        string
	ContentType string // "-" sends none
	Body        string
	Chunked     bool // send without Content-Length
}

// response is what came back.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (hs *harness) do(tb testing.TB, rq request) response {
	tb.Helper()
	resp, err := hs.try(natstest.Ctx(tb), rq)
	if err != nil {
		tb.Fatalf("%s %s: %v", rq.Method, rq.Path, err)
	}
	return resp
}

func (hs *harness) try(ctx context.Context, rq request) (response, error) {
	if rq.Method == "" {
		rq.Method = http.MethodPost
	}
	var body io.Reader = strings.NewReader(rq.Body)
	if rq.Chunked {
		body = io.MultiReader(strings.NewReader(rq.Body))
	}
	req, err := http.NewRequestWithContext(ctx, rq.Method, hs.url+rq.Path, body)
	if err != nil {
		return response{}, err
	}
	if rq.Chunked {
		req.ContentLength = -1
	}
	switch rq.ContentType {
	case "":
		req.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		req.Header.Set("Content-Type", rq.ContentType)
	}
	resp, err := hs.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// post sends a webhook body to path.
func (hs *harness) post(tb testing.TB, path, body string) response {
	tb.Helper()
	return hs.do(tb, request{Path: path, Body: body})
}

// stored is every message in WEBHOOKS, read by sequence.
func stored(tb testing.TB, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	tb.Helper()
	return natstest.StreamMsgs(tb, js, contract.Default.StreamWebhooks)
}

// outcomes is the value of h's bridge_ingest_webhooks_total{outcome}.
func outcomes(h *Handler, outcome string) float64 {
	return testutil.ToFloat64(h.metrics.outcomes[outcome])
}

// gatePublisher is the real JetStream publisher with a gate: PublishMsg reports on entered, then waits for
// the gate (or its ctx) before publishing for real.
type gatePublisher struct {
	jetstream.Publisher
	entered chan struct{}
	gate    chan struct{}
}

func newGatePublisher(p jetstream.Publisher) *gatePublisher {
	return &gatePublisher{Publisher: p, entered: make(chan struct{}, 1024), gate: make(chan struct{})}
}

func (g *gatePublisher) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	g.entered <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Publisher.PublishMsg(ctx, m, opts...)
}

// webhookBody is a webhook body for id with the upstream's documented fields plus one it may add later.
func webhookBody(id string) string {
	return `{"job_id":"` + id + `","status":"completed","is_prohibited":false,"completed_at":"2025-01-01T00:00:00Z","delivery_id":"d-1"}`
}
