package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/serving"
)

// Defaults of [ServerConfig]. An answer is written within ReadTimeout + Config.PublishTimeout of a request's
// first byte (4 s + at most 5 s), inside the upstream's 10 s client timeout; WriteTimeout then bounds the
// write itself, which only a peer that stops reading can hold up.
const (
	// DefaultReadTimeout bounds reading one request, from its first byte to the end of its body (on a new
	// connection, from the connection's opening).
	DefaultReadTimeout = 4 * time.Second
	// DefaultWriteTimeout bounds writing an answer, once the handler has answered.
	DefaultWriteTimeout = time.Second
	// DefaultIdleTimeout closes idle keep-alive connections.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxConns bounds the open connections, unless MaxBody calls for fewer (see MaxConns).
	DefaultMaxConns = 1024
	// MinDefaultMaxConns is the fewest connections the default bound allows, however large MaxBody is.
	MinDefaultMaxConns = 64
	// BodyMemory is what the default connection bound keeps the bodies being read within: MaxConns
	// defaults to BodyMemory / MaxBody, between MinDefaultMaxConns and DefaultMaxConns. With net/http's own
	// buffers and a goroutine per connection (about 20 KiB), the worst case of 1,024 connections each
	// holding a 64 KiB body is about 84 MiB, inside a 256 MiB pod.
	BodyMemory = 64 << 20
	// DefaultShutdownTimeout leaves room for in-flight webhooks to get their ack (at most PublishTimeout).
	DefaultShutdownTimeout = 10 * time.Second
)

// ServerConfig is what [Listen] needs. Only Handler is required.
type ServerConfig struct {
	// Addr is the TCP address to listen on, e.g. ":8080" or "127.0.0.1:0"; empty means ":8080".
	Addr string
	// Handler serves the requests, normally a [Handler]. Required.
	Handler http.Handler
	// Log receives the server's own errors (TLS handshakes, unreadable requests); it is tagged
	// component=ingest.http.
	Log zerolog.Logger
	// ReadTimeout, WriteTimeout and IdleTimeout are as the Default… constants say; 0 means the constant.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration
	// MaxHeaderBytes bounds the request line and headers; 0 means DefaultMaxHeaderBytes. The [Handler]
	// answers headers over its own bound 431 (JSON, counted); net/http answers headers over twice this
	// bound 431 (plain text) before any handler runs.
	MaxHeaderBytes int
	// MaxBody is the body bound the connection bound is derived from; 0 means DefaultMaxBody. Give the
	// [Handler] the same (Config.MaxBody), which enforces it.
	MaxBody int64
	// MaxConns bounds the open connections. A connection past it is still accepted, and the connection that
	// has waited longest without a whole request in the handler (idle keep-alive, silent, or still sending
	// its request) is closed instead, so idle or slow clients can neither crowd out a real webhook nor
	// exhaust file descriptors. 0 means BodyMemory / MaxBody, between MinDefaultMaxConns and
	// DefaultMaxConns (1,024 at the default MaxBody); negative means no bound.
	MaxConns int
	// ShutdownDelay is how long Run keeps serving after its ctx is done, with readiness already off
	// (OnShutdown), so that a load balancer stops sending before the listener closes; answers given
	// meanwhile close their connection. 0 closes the listener at once.
	ShutdownDelay time.Duration
	// ShutdownTimeout bounds how long Run waits for in-flight requests once the listener is closed; 0
	// means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// TLSCertFile and TLSKeyFile, when both set, make the server speak HTTPS (and HTTP/2) with that PEM
	// key pair.
	TLSCertFile string
	TLSKeyFile  string
	// OnShutdown, when set, is called once when Run begins shutting down, before the shutdown delay; wire
	// it to [Handler.SetShuttingDown] so /readyz fails first.
	OnShutdown func()
}

func (c *ServerConfig) setDefaults() {
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxConns == 0 && c.MaxBody > 0 {
		c.MaxConns = int(min(max(BodyMemory/c.MaxBody, MinDefaultMaxConns), DefaultMaxConns))
	}
}

// Validate reports the first field out of range, naming it.
func (c *ServerConfig) Validate() error {
	switch {
	case c.Handler == nil:
		return fmt.Errorf("%w: Handler: required", ErrInvalidConfig)
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return fmt.Errorf("%w: TLSCertFile, TLSKeyFile: set both or neither", ErrInvalidConfig)
	case c.MaxHeaderBytes < 0:
		return fmt.Errorf("%w: MaxHeaderBytes: %d is negative", ErrInvalidConfig, c.MaxHeaderBytes)
	case c.MaxBody < 0:
		return fmt.Errorf("%w: MaxBody: %d is negative", ErrInvalidConfig, c.MaxBody)
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"ReadTimeout", c.ReadTimeout}, {"WriteTimeout", c.WriteTimeout}, {"IdleTimeout", c.IdleTimeout},
		{"ShutdownDelay", c.ShutdownDelay}, {"ShutdownTimeout", c.ShutdownTimeout},
	} {
		if f.d < 0 {
			return fmt.Errorf("%w: %s: %v is negative", ErrInvalidConfig, f.name, f.d)
		}
	}
	return nil
}

// Server is the HTTP listener of the ingest role: a net/http server with the timeouts the upstream's 10 s
// client timeout calls for, a bound on connections that evicts rather than refuses, and a shutdown that
// keeps serving through a delay. [Listen] binds it; [Server.Run] serves until its ctx is done.
type Server struct {
	cfg ServerConfig
	l   net.Listener
	srv *http.Server
	log zerolog.Logger
	// conns tracks the open connections and bounds them by MaxConns.
	conns *connLimiter
	// draining is set when shutdown begins: answers from then on close their connection.
	draining atomic.Bool
	// ran is set by the first Run; a Server runs once.
	ran atomic.Bool
	// serving is set once Run serves.
	serving serving.Signal
}

// Serving is closed once Run serves the listener.
func (s *Server) Serving() <-chan struct{} { return s.serving.Done() }

// Listen checks cfg, loads the TLS key pair if any and binds the address synchronously, so a port clash or
// a bad certificate is a start-up error. Serving starts with [Server.Run].
func Listen(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log.With().Str("component", "ingest.http").Logger(), conns: newConnLimiter(cfg.MaxConns)}
	s.srv = &http.Server{
		Handler:           s.conns.wrap(s.closeWhileDraining(cfg.Handler)),
		ReadHeaderTimeout: cfg.ReadTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		// net/http counts WriteTimeout from the end of the request's headers: it covers the body, the
		// publish and the write.
		WriteTimeout:   cfg.ReadTimeout + MaxPublishTimeout + cfg.WriteTimeout,
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: 2 * cfg.MaxHeaderBytes,
		ConnState:      s.conns.connState,
		ConnContext:    s.conns.connContext,
		// net/http's messages are about connections that clients broke (a TLS handshake, a malformed
		// request), not about the bridge.
		ErrorLog: log.New(infoWriter{s.log}, "", 0),
	}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w %s, %s: %w", ErrTLSKeyPair, cfg.TLSCertFile, cfg.TLSKeyFile, err)
		}
		s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	s.l = l
	return s, nil
}

// closeWhileDraining makes every answer given after shutdown began close its connection, so that clients
// open new ones (to another replica, once the load balancer has stopped sending here).
func (s *Server) closeWhileDraining(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// infoWriter hands net/http's log lines to zerolog at info level.
type infoWriter struct{ log zerolog.Logger }

func (w infoWriter) Write(p []byte) (int, error) {
	w.log.Info().Msg(string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	if n := len(p); n > 0 && p[n-1] == '\n' {
		return p[:n-1]
	}
	return p
}

// Evicted is the number of connections closed so far to stay within MaxConns.
func (s *Server) Evicted() uint64 { return s.conns.evicted.Load() }

// Addr is the address the server is bound to (with the real port when Addr asked for port 0).
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Run serves until ctx is done, then calls OnShutdown, keeps serving for ShutdownDelay, stops accepting
// connections and waits up to ShutdownTimeout for in-flight requests to finish. It returns nil after a
// clean shutdown, an error when serving failed or in-flight requests outlived ShutdownTimeout (they are
// then cut off). A Server runs once.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return ErrServerRunning
	}
	useTLS := s.srv.TLSConfig != nil
	errc := make(chan error, 1)
	go func() {
		if useTLS {
			errc <- s.srv.ServeTLS(s.l, "", "")
			return
		}
		errc <- s.srv.Serve(s.l)
	}()
	s.serving.Set() // connections queue on the bound listener until Serve accepts them
	s.log.Info().Str("addr", s.Addr().String()).Bool("tls", useTLS).Msg("listening")
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	if s.cfg.OnShutdown != nil {
		s.cfg.OnShutdown()
	}
	s.draining.Store(true)
	if d := s.cfg.ShutdownDelay; d > 0 {
		s.log.Info().Dur("delay", d).Msg("shutting down: serving on through the shutdown delay")
		t := time.NewTimer(d)
		select {
		case err := <-errc:
			t.Stop()
			return fmt.Errorf("serve %s: %w", s.Addr(), err)
		case <-t.C:
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		s.log.Error().Err(serr).Msg("serve ended")
	}
	if err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("shut down %s: %w", s.Addr(), err)
	}
	s.log.Info().Msg("stopped")
	return nil
}

// Close stops the server at once, cutting off in-flight requests; use it when Run was never called. It is
// idempotent.
func (s *Server) Close() error {
	err := s.l.Close()
	_ = s.srv.Close()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}
