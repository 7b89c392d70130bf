package ingest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/natstest"
)

func TestServerFinishesInFlightOnShutdown(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	createWebhooks(t, js, 1)
	gp := newGatePublisher(js)
	h, err := New(Config{Publisher: gp, Log: zerolog.New(zerolog.NewTestWriter(t)), Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	shutdown := make(chan struct{})
	s, err := Listen(ServerConfig{
		Addr:       "127.0.0.1:0",
		Handler:    h,
		Log:        zerolog.New(zerolog.NewTestWriter(t)),
		OnShutdown: func() { h.SetShuttingDown(); close(shutdown) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := Listen(ServerConfig{Addr: s.Addr().String(), Handler: h}); err == nil {
		t.Fatal("second Listen on the same address succeeded, want a start-up error")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(runCtx) }()

	base := "http://" + s.Addr().String()
	resp, err := http.Get(base + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	id := uuid.NewString()
	type result struct {
		status int
		body   string
		err    error
	}
	answered := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/webhook/prompt", strings.NewReader(webhookBody(id)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- result{status: resp.StatusCode, body: string(b)}
	}()
	natstest.RecvWithin(t, gp.entered, 10*time.Second)
	stop()
	natstest.RecvWithin(t, shutdown, 10*time.Second)
	if h.Ready() {
		t.Error("handler still ready after shutdown started")
	}
	close(gp.gate)
	if r := natstest.RecvWithin(t, answered, 10*time.Second); r.err != nil || r.status != http.StatusOK {
		t.Fatalf("in-flight webhook: %d %s %v, want 200", r.status, r.body, r.err)
	}
	if err := natstest.RecvWithin(t, runErr, 15*time.Second); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if msgs := stored(t, js); len(msgs) != 1 {
		t.Fatalf("stream has %d messages, want 1", len(msgs))
	}
	if err := s.Run(ctx); !errors.Is(err, ErrServerRunning) {
		t.Errorf("second Run = %v, want %v", err, ErrServerRunning)
	}
}

func TestServerConfigValidate(t *testing.T) {
	h := http.NotFoundHandler()
	tests := []struct {
		name string
		cfg  ServerConfig
	}{
		{"no handler", ServerConfig{Addr: "127.0.0.1:0"}},
		{"cert without key", ServerConfig{Addr: "127.0.0.1:0", Handler: h, TLSCertFile: "c.pem"}},
		{"negative timeout", ServerConfig{Addr: "127.0.0.1:0", Handler: h, WriteTimeout: -1}},
		{"negative body bound", ServerConfig{Addr: "127.0.0.1:0", Handler: h, MaxBody: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Listen(tt.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Listen = %v, want %v", err, ErrInvalidConfig)
			}
		})
	}
	if _, err := Listen(ServerConfig{Addr: "127.0.0.1:0", Handler: h, TLSCertFile: "missing.pem", TLSKeyFile: "missing.key"}); !errors.Is(err, ErrTLSKeyPair) {
		t.Fatalf("Listen with a missing key pair = %v, want %v", err, ErrTLSKeyPair)
	}
}

// TestMaxConnsDefaultBoundsBodyMemory: the default connection bound keeps the bodies being read within
// 64 MiB, between 64 and 1,024 connections.
func TestMaxConnsDefaultBoundsBodyMemory(t *testing.T) {
	for _, tt := range []struct {
		maxBody int64
		want    int
	}{
		{0, 1024}, // DefaultMaxBody, 64 KiB
		{64 << 10, 1024},
		{128 << 10, 512},
		{1 << 20, 64},
		{8 << 20, 64},
		{1 << 10, 1024},
	} {
		c := ServerConfig{MaxBody: tt.maxBody}
		c.setDefaults()
		if c.MaxConns != tt.want {
			t.Errorf("MaxBody %d: MaxConns %d, want %d", tt.maxBody, c.MaxConns, tt.want)
		}
	}
	c := ServerConfig{MaxBody: 8 << 20, MaxConns: 5000}
	if c.setDefaults(); c.MaxConns != 5000 {
		t.Errorf("a set MaxConns became %d", c.MaxConns)
	}
}
