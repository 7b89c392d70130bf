package bridge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream/simulator"
)

// embedConfig is the Config an embedding program builds by hand: DefaultConfig with the simulator as the
// upstream, a loopback listener and a private store, NATS left to the test (BRIDGE_NATS_URL empty).
func embedConfig(tb testing.TB) Config {
	tb.Helper()
	sim := simtest.Run(tb, simulator.Config{})
	cfg := DefaultConfig()
	cfg.APIURL, cfg.APIKey, cfg.APIRPM = sim.URL(), simulator.DefaultKey, 6000
	cfg.HTTPAddr, cfg.NATSListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:-1", tb.TempDir()
	if err := cfg.Validate(); err != nil {
		tb.Fatalf("config: %v", err)
	}
	return cfg
}

// runApp builds an App and runs it; stop cancels Run's ctx and returns what Run returned. The test's
// end stops it too.
func runApp(tb testing.TB, cfg Config, opts ...Option) (_ *App, stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, cfg, zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.WarnLevel),
		append([]Option{WithReconcileInstance("t")}, opts...)...)
	if err != nil {
		cancel()
		tb.Fatalf("new app: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			runErr = natstest.RecvWithin(tb, done, 30*time.Second)
		})
		return runErr
	}
	tb.Cleanup(func() { _ = stop() })
	return a, stop
}

// get answers GET url's status and body.
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

// post posts a webhook body to url and answers the status and body.
func post(tb testing.TB, url, body string) (int, string) {
	tb.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestWithConnLeavesTheConnectionOpen runs a bridge on the caller's connection: it starts no server and
// dials nothing, provisions its streams on that connection's server, and when Run returns the connection
// is still open, usable, and holds the subscriptions it held before.
func TestWithConnLeavesTheConnectionOpen(t *testing.T) {
	srv := natstest.RunServer(t)
	nc, js := natstest.Connect(t, srv.ClientURL())
	ctx := natstest.CtxWithin(t, 10*time.Second)
	// A first request makes the connection's shared reply subscription, which stays for its life.
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatal(err)
	}
	subsBefore := nc.NumSubscriptions()

	a, stop := runApp(t, embedConfig(t), WithConn(nc))
	if a.Server() != nil {
		t.Errorf("an embedded nats-server was started beside the caller's connection")
	}
	waitReady(t, "http://"+a.Addr().String())
	if n := nc.NumSubscriptions(); n <= subsBefore {
		t.Errorf("the roles hold %d subscriptions on the caller's connection, want more than %d", n, subsBefore)
	}
	for _, name := range []string{"WEBHOOKS", "RESULTS"} {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s on the caller's server: %v", name, err)
		}
	}

	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if nc.IsClosed() || nc.IsDraining() || !nc.IsConnected() {
		t.Fatalf("the caller's connection after Run: closed %v, draining %v, connected %v; want it open",
			nc.IsClosed(), nc.IsDraining(), nc.IsConnected())
	}
	if n := nc.NumSubscriptions(); n != subsBefore {
		t.Errorf("the caller's connection holds %d subscriptions after Run, want %d as before", n, subsBefore)
	}
	if _, err := js.Stream(ctx, "RESULTS"); err != nil {
		t.Errorf("the caller's connection after Run: %v", err)
	}
}

// TestWithRegistererRegistersInTheCallersRegistry runs a bridge on a registry that already holds the Go
// and process collectors: the bridge's metrics appear in it, Metrics gathers it, and once Run returns
// they are gone again, so a second bridge can register on it. A registry that already holds one of the
// bridge's names stops New with an error, and keeps nothing of the bridge.
func TestWithRegistererRegistersInTheCallersRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := embedConfig(t)
	srv := natstest.RunServer(t)
	cfg.NATSURL = srv.ClientURL()

	clash := prometheus.NewRegistry()
	clash.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "bridge_ready", Help: "The caller's own."}))
	_, err := New(natstest.CtxWithin(t, 30*time.Second), cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		WithReconcileInstance("t"), WithRegisterer(clash))
	const want = `metrics: a previously registered descriptor with the same fully-qualified name as Desc{fqName: "bridge_ready"`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("New on a registry holding bridge_ready: %v, want an error starting %s", err, want)
	}
	for name := range families(t, clash) {
		if name != "bridge_ready" {
			t.Errorf("New failed, but left %s in the caller's registry", name)
		}
	}

	for run := 1; run <= 2; run++ {
		a, stop := runApp(t, cfg, WithRegisterer(reg), WithVersion("v1.2.3"))
		if a.Metrics() != prometheus.Gatherer(reg) {
			t.Errorf("run %d: Metrics is not the caller's registry", run)
		}
		waitReady(t, "http://"+a.Addr().String())
		got := families(t, reg)
		for name, want := range map[string]float64{"bridge_build_info": 1, "bridge_ready": 1, "bridge_ingest_in_flight_webhooks": 0} {
			if v, ok := got[name]; !ok || v != want {
				t.Errorf("run %d: caller's registry: %s = %v (present %v), want %v", run, name, v, ok, want)
			}
		}
		if _, ok := got["go_goroutines"]; !ok {
			t.Errorf("run %d: caller's registry lost go_goroutines", run)
		}
		code, body := get(t, "http://"+a.Addr().String()+"/metrics")
		if code != http.StatusOK || !strings.Contains(body, "\nbridge_ready 1\n") || !strings.Contains(body, "\ngo_goroutines ") {
			t.Errorf("run %d: GET /metrics: %d, want 200 with bridge_ready 1 and go_goroutines", run, code)
		}

		if err := stop(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		for name := range families(t, reg) {
			if strings.HasPrefix(name, "bridge_") {
				t.Errorf("run %d: %s is still in the caller's registry after Run", run, name)
			}
		}
	}
}

// families gathers reg: each family's name, with the value of its first sample (gauges and counters).
func families(tb testing.TB, reg prometheus.Gatherer) map[string]float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		out[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	return out
}

// blockingCollector holds every Gather until release is closed, so that a GET /metrics stays in flight.
type blockingCollector struct {
	desc     *prometheus.Desc
	entered  chan struct{}
	release  chan struct{}
	enterOne sync.Once
}

func (c *blockingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *blockingCollector) Collect(ch chan<- prometheus.Metric) {
	c.enterOne.Do(func() { close(c.entered) })
	<-c.release
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1)
}

// TestWithoutListenerServesThroughTheCallersServer runs a bridge with no listener of its own, its
// handlers mounted in the test's server: /readyz answers 200 once the roles serve, and webhooks are
// stored through both handlers. When Run's ctx ends, /readyz answers 503 at once, while a request in
// flight in the handlers holds the roles up: webhooks are still stored meanwhile, and Run returns only
// after that request has finished. After Run, /readyz stays 503 and webhooks are refused.
func TestWithoutListenerServesThroughTheCallersServer(t *testing.T) {
	cfg := embedConfig(t)
	srv := natstest.RunServer(t)
	cfg.NATSURL = srv.ClientURL()
	reg := prometheus.NewRegistry()
	hold := &blockingCollector{desc: prometheus.NewDesc("test_hold", "Holds a gather.", nil, nil),
		entered: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		WithReconcileInstance("t"), WithoutListener(), WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var released, returned bool
	defer func() { // on a failure half-way
		cancel()
		if !released {
			close(hold.release)
		}
		if !returned {
			natstest.RecvWithin(t, done, 30*time.Second)
		}
	}()
	if a.Addr() != nil {
		t.Errorf("Addr = %v, want nil without a listener", a.Addr())
	}
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/{modality}", a.WebhookHandler())
	mux.Handle("/bridge/", http.StripPrefix("/bridge", a.Handler()))
	web := httptest.NewServer(mux)
	t.Cleanup(web.Close) // after the deferred release below: Close waits for the request it holds

	waitReady(t, web.URL+"/bridge")
	const id1, id2, id3 = "7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f", "8c1d4a6f-9e3b-4d2c-8f5a-3b7e9d1c2f4a", "9d2e5b7a-0f4c-4e3d-9a6b-4c8f0e2d3a5b"
	for _, tc := range []struct{ url, id, want string }{
		{web.URL + "/hooks/prompt", id1, `{"job_id":"` + id1 + `","duplicate":false}`},
		{web.URL + "/bridge/webhook/prompt", id1, `{"job_id":"` + id1 + `","duplicate":true}`},
	} {
		if code, body := post(t, tc.url, `{"job_id":"`+tc.id+`","status":"completed"}`); code != http.StatusOK || strings.TrimSpace(body) != tc.want {
			t.Errorf("POST %s: %d %s, want 200 %s", tc.url, code, body, tc.want)
		}
	}

	// A GET /metrics held in flight in the handler, across the end of Run's ctx.
	reg.MustRegister(hold)
	metricsDone := make(chan int, 1)
	go func() {
		resp, err := http.Get(web.URL + "/bridge/metrics")
		if err != nil {
			metricsDone <- 0
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		metricsDone <- resp.StatusCode
	}()
	natstest.RecvWithin(t, hold.entered, 10*time.Second)
	cancel()
	natstest.WaitFor(t, 10*time.Second, func() error {
		if code, _ := get(t, web.URL+"/bridge/readyz"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz %d after Run's ctx ended, want 503", code)
		}
		return nil
	})
	if code, body := post(t, web.URL+"/hooks/image", `{"job_id":"`+id2+`","status":"completed"}`); code != http.StatusOK {
		t.Errorf("webhook while a request holds the roles up: %d %s, want 200", code, body)
	}
	select {
	case err := <-done:
		returned = true
		t.Fatalf("Run returned (%v) while a request was in flight in the handlers", err)
	default:
	}
	close(hold.release)
	released = true
	if code := natstest.RecvWithin(t, metricsDone, 10*time.Second); code != http.StatusOK {
		t.Errorf("the GET /metrics in flight: %d, want 200", code)
	}
	returned = true
	if err := natstest.RecvWithin(t, done, 30*time.Second); err != nil {
		t.Fatalf("run: %v", err)
	}

	if code, _ := get(t, web.URL+"/bridge/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz after Run: %d, want 503", code)
	}
	if code, _ := post(t, web.URL+"/hooks/video", `{"job_id":"`+id3+`","status":"completed"}`); code != http.StatusServiceUnavailable {
		t.Errorf("webhook after Run, the bridge's NATS closed: %d, want 503", code)
	}
}

// TestWebhooksRefusedWithoutTheIngestRole: in a process without the ingest role, both handlers a caller
// mounts answer a webhook 404, as the listener does.
func TestWebhooksRefusedWithoutTheIngestRole(t *testing.T) {
	a := &App{cfg: Config{Roles: []string{RoleVerify, RoleSubmit}}}
	const want = `{"error":"not_found","message":"this process does not run the ingest role"}` + "\n"
	for name, h := range map[string]http.Handler{"WebhookHandler": a.WebhookHandler(), "Handler": a.Handler()} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/webhook/prompt", strings.NewReader(`{}`)))
		if rec.Code != http.StatusNotFound || rec.Body.String() != want {
			t.Errorf("%s: %d %q, want 404 %q", name, rec.Code, rec.Body.String(), want)
		}
	}
}
