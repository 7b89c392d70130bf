package ingest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/natstest"
)

// liveServer is the real ingest.Server on 127.0.0.1:0 in front of a Handler on an embedded JetStream.
type liveServer struct {
	srv  *Server
	base string
	js   jetstream.JetStream
	h    *Handler
}

// startServer runs a Server built from scfg around a Handler built from hcfg (Publisher defaults to the
// connection's JetStream, or wrapped by pub when given) until the test ends.
func startServer(t *testing.T, scfg ServerConfig, hcfg Config, pub func(jetstream.Publisher) jetstream.Publisher) *liveServer {
	t.Helper()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	createWebhooks(t, js, 1)
	hcfg.Publisher = js
	if pub != nil {
		hcfg.Publisher = pub(js)
	}
	hcfg.Log = zerolog.New(zerolog.NewTestWriter(t))
	hcfg.Metrics = prometheus.NewRegistry()
	h, err := New(hcfg)
	if err != nil {
		t.Fatal(err)
	}
	scfg.Handler, scfg.Log = h, zerolog.New(zerolog.NewTestWriter(t))
	s := runListener(t, scfg)
	return &liveServer{srv: s, base: "http://" + s.Addr().String(), js: js, h: h}
}

// runListener runs the real listener built from scfg on 127.0.0.1:0 until the test ends.
func runListener(tb testing.TB, scfg ServerConfig) *Server {
	tb.Helper()
	scfg.Addr = "127.0.0.1:0"
	s, err := Listen(scfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			tb.Error("server did not stop within 30s")
		}
	})
	return s
}

// postWebhook sends one real webhook on a fresh connection and returns the status.
func (ls *liveServer) postWebhook(t *testing.T, id string) int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequestWithContext(natstest.Ctx(t), http.MethodPost, ls.base+"/webhook/prompt", strings.NewReader(webhookBody(id)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("real webhook: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// dial opens a raw connection to the server, closed at the end of the test.
func (ls *liveServer) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", ls.srv.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitCutOff reads c until the server closes it and returns what it sent. It fails the test if the
// server keeps the connection open for 30 s (far beyond any timeout the tests configure).
func waitCutOff(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(c)
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		t.Fatalf("server kept the stalled connection open: %v (read %q)", err, b)
	}
	return string(b) // EOF, or a reset: either way the server let go
}

func TestSlowHeaderClientIsCutOffAndWebhooksFlow(t *testing.T) {
	t.Parallel()
	ls := startServer(t, ServerConfig{ReadTimeout: time.Second}, Config{}, nil)
	slow := make([]net.Conn, 20)
	for i := range slow {
		slow[i] = ls.dial(t)
		if _, err := io.WriteString(slow[i], "POST /webhook/prompt HTTP/1.1\r\nHost: bridge\r\nContent-Type: appl"); err != nil {
			t.Fatal(err)
		}
	}
	// While the slow clients hold their connections, a real webhook is answered.
	if st := ls.postWebhook(t, uuid.NewString()); st != http.StatusOK {
		t.Fatalf("real webhook next to slow-header clients: %d, want 200", st)
	}
	for _, c := range slow {
		if got := waitCutOff(t, c); got != "" && !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Fatalf("slow-header client got %q, want the connection closed", got)
		}
	}
	if msgs := stored(t, ls.js); len(msgs) != 1 {
		t.Fatalf("%d messages stored, want the real webhook only", len(msgs))
	}
}

func TestSlowBodyClientIsCutOffAndNothingPublished(t *testing.T) {
	t.Parallel()
	ls := startServer(t, ServerConfig{ReadTimeout: time.Second}, Config{}, nil)
	slow := ls.dial(t)
	body := webhookBody(uuid.NewString())
	if _, err := fmt.Fprintf(slow, "POST /webhook/prompt HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\n\r\n%s", len(body), body[:10]); err != nil {
		t.Fatal(err)
	}
	if st := ls.postWebhook(t, uuid.NewString()); st != http.StatusOK {
		t.Fatalf("real webhook next to a slow-body client: %d, want 200", st)
	}
	got := waitCutOff(t, slow)
	if got != "" && !strings.HasPrefix(got, "HTTP/1.1 408") {
		t.Fatalf("slow-body client got %q, want 408 or the connection closed", got)
	}
	if msgs := stored(t, ls.js); len(msgs) != 1 {
		t.Fatalf("%d messages stored, want the real webhook only", len(msgs))
	}
}

// idleConns is how many idle connections the test opens: 2000, fewer when the file descriptor limit
// (two per connection in this process, plus headroom) does not allow it.
func idleConns(t *testing.T) int {
	n := 2000
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		if room := (int(rl.Cur) - 256) / 2; room < n {
			n = max(room, 100)
			t.Logf("file descriptor limit %d: opening %d idle connections", rl.Cur, n)
		}
	}
	return n
}

func TestThousandsOfIdleConnectionsDoNotBlockWebhooks(t *testing.T) {
	t.Parallel()
	ls := startServer(t, ServerConfig{ReadTimeout: time.Minute, IdleTimeout: time.Minute, MaxConns: 4096}, Config{}, nil)
	n := idleConns(t)
	for i := range n {
		c := ls.dial(t)
		if i%2 == 1 {
			continue // silent: connected, never sends a byte
		}
		// Keep-alive: one request, then idle.
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("idle connection %d: healthz %d", i, resp.StatusCode)
		}
	}
	for range 5 {
		if st := ls.postWebhook(t, uuid.NewString()); st != http.StatusOK {
			t.Fatalf("real webhook next to %d idle connections: %d, want 200", n, st)
		}
	}
	if ev := ls.srv.Evicted(); ev != 0 {
		t.Errorf("%d connections evicted below MaxConns", ev)
	}
}

func TestConnectionBoundEvictsIdleNotInFlight(t *testing.T) {
	t.Parallel()
	var gp *gatePublisher
	ls := startServer(t, ServerConfig{MaxConns: 50, ReadTimeout: time.Minute, IdleTimeout: time.Minute}, Config{},
		func(p jetstream.Publisher) jetstream.Publisher { gp = newGatePublisher(p); return gp })
	// A webhook in flight (its publish held at the gate) while a crowd of silent connections arrives.
	id := uuid.NewString()
	inFlight := make(chan int, 1)
	go func() {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		req, _ := http.NewRequest(http.MethodPost, ls.base+"/webhook/prompt", strings.NewReader(webhookBody(id)))
		resp, err := client.Do(req)
		if err != nil {
			inFlight <- -1
			return
		}
		resp.Body.Close()
		inFlight <- resp.StatusCode
	}()
	natstest.RecvWithin(t, gp.entered, 10*time.Second)
	const crowd = 200
	for range crowd {
		ls.dial(t)
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		if ev := ls.srv.Evicted(); ev < crowd-50 {
			return fmt.Errorf("%d evicted, want at least %d", ev, crowd-50)
		}
		return nil
	})
	close(gp.gate)
	if st := natstest.RecvWithin(t, inFlight, 10*time.Second); st != http.StatusOK {
		t.Fatalf("webhook in flight during the crowd: %d, want 200 (it must not be evicted)", st)
	}
	if st := ls.postWebhook(t, uuid.NewString()); st != http.StatusOK {
		t.Fatalf("webhook after the crowd: %d, want 200", st)
	}
}

func TestOversizedHeadersAnswered431(t *testing.T) {
	t.Parallel()
	ls := startServer(t, ServerConfig{}, Config{}, nil)
	post := func(padding int) int {
		req, _ := http.NewRequestWithContext(natstest.Ctx(t), http.MethodPost, ls.base+"/webhook/prompt",
			strings.NewReader(webhookBody(uuid.NewString())))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Padding", strings.Repeat("a", padding))
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Over the handler's bound: its JSON answer, counted.
	if st := post(DefaultMaxHeaderBytes + 1024); st != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("headers 1 KiB over the bound: status %d, want 431", st)
	}
	if got := outcomes(ls.h, "headers_too_large"); got != 1 {
		t.Errorf("headers_too_large counted %v times, want 1", got)
	}
	// Far over it: net/http answers before any handler runs.
	if st := post(4 * DefaultMaxHeaderBytes); st != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("headers 4 times the bound: status %d, want 431", st)
	}
	if msgs := stored(t, ls.js); len(msgs) != 0 {
		t.Fatalf("%d messages stored, want 0", len(msgs))
	}
	if st := ls.postWebhook(t, uuid.NewString()); st != http.StatusOK {
		t.Fatalf("webhook after the oversized one: %d", st)
	}
}

// TestPublishThatNeverCompletesIsAnswered503: a publish that never completes is cut at PublishTimeout, so
// the sender gets a 503 with Retry-After rather than a dead connection.
func TestPublishThatNeverCompletesIsAnswered503(t *testing.T) {
	t.Parallel()
	ls := startServer(t, ServerConfig{}, Config{PublishTimeout: time.Second},
		func(p jetstream.Publisher) jetstream.Publisher { return newGatePublisher(p) }) // gate never opens
	req, _ := http.NewRequestWithContext(natstest.Ctx(t), http.MethodPost, ls.base+"/webhook/prompt",
		strings.NewReader(webhookBody(uuid.NewString())))
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatalf("no answer after PublishTimeout: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After 1", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}
