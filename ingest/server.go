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
)

// Defaults of [ServerConfig]. WriteTimeout stays well inside the upstream's 10 s client timeout; the
// publish itself is bounded by Config.PublishTimeout (at most 5 s) and cut further so the answer is
// written before WriteTimeout, however long the body took (see [Handler]).
const (
	// DefaultReadHeaderTimeout bounds reading the request line and headers.
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout bounds reading the whole request, body included.
	DefaultReadTimeout = 8 * time.Second
	// DefaultWriteTimeout bounds the time from the end of the headers to the end of the answer.
	DefaultWriteTimeout = 9 * time.Second
	// DefaultIdleTimeout closes idle keep-alive connections.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxHeaderBytes bounds the request headers.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultMaxConns bounds the open connections.
	DefaultMaxConns = 4096
	// DefaultShutdownTimeout leaves room for in-flight webhooks to get their ack (at most PublishTimeout).
	DefaultShutdownTimeout = 10 * time.Second
)

// ServerConfig is what [Listen] needs. Only Handler is required.
type ServerConfig struct {
	// Addr is the TCP address to listen on, e.g. ":8080" or "127.0.0.1:0"; empty means ":8080".
	Addr string
	// Handler serves the requests, normally a [*Handler]. Required.
	Handler http.Handler
	// Log receives the server's own errors (TLS handshakes, bad requests); it is tagged component=ingest.http.
	Log zerolog.Logger
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are those of http.Server; 0 means the
	// Default… constant.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// MaxHeaderBytes is that of http.Server; 0 means DefaultMaxHeaderBytes. Larger headers are answered 431.
	MaxHeaderBytes int
	// MaxConns bounds the open connections. A connection past it is still accepted, and the connection that
	// has waited longest without a request in the handler (idle keep-alive, silent, or still sending its
	// headers) is closed instead, so idle or slow clients can neither crowd out a real webhook nor exhaust
	// file descriptors. 0 means DefaultMaxConns; negative means no bound.
	MaxConns int
	// ShutdownTimeout bounds how long Run waits for in-flight requests after ctx is done; 0 means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// TLSCertFile and TLSKeyFile, when both set, make the server speak HTTPS with that PEM key pair.
	TLSCertFile string
	TLSKeyFile  string
	// OnShutdown, when set, is called once when Run begins shutting down, before the listener closes; wire
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
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
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
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"ReadHeaderTimeout", c.ReadHeaderTimeout}, {"ReadTimeout", c.ReadTimeout},
		{"WriteTimeout", c.WriteTimeout}, {"IdleTimeout", c.IdleTimeout}, {"ShutdownTimeout", c.ShutdownTimeout},
	} {
		if f.d < 0 {
			return fmt.Errorf("%w: %s: %v is negative", ErrInvalidConfig, f.name, f.d)
		}
	}
	return nil
}

// Server is the HTTP listener of the ingest role. [Listen] binds it; [Server.Run] serves until its ctx is done.
type Server struct {
	cfg ServerConfig
	l   net.Listener
	srv *http.Server
	log zerolog.Logger
	// conns bounds the open connections; nil when MaxConns is negative.
	conns *connLimiter
	// ran is set by the first Run; a Server runs once.
	ran atomic.Bool
}

// Listen checks cfg, loads the TLS key pair if any and binds the address synchronously, so a port clash or
// a bad certificate is a start-up error. Serving starts with [Server.Run].
func Listen(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lg := cfg.Log.With().Str("component", "ingest.http").Logger()
	srv := &http.Server{
		Handler:           cfg.Handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          log.New(lg, "", 0),
	}
	var conns *connLimiter
	if cfg.MaxConns > 0 {
		conns = newConnLimiter(cfg.MaxConns)
		srv.Handler = conns.wrap(cfg.Handler)
		srv.ConnState = conns.connState
		srv.ConnContext = conns.connContext
	}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w %s, %s: %w", ErrTLSKeyPair, cfg.TLSCertFile, cfg.TLSKeyFile, err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	return &Server{cfg: cfg, l: l, srv: srv, log: lg, conns: conns}, nil
}

// Evicted is the number of connections closed so far to stay within MaxConns.
func (s *Server) Evicted() uint64 {
	if s.conns == nil {
		return 0
	}
	return s.conns.evicted.Load()
}

// Addr is the address the server is bound to (with the real port when Addr asked for port 0).
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Run serves until ctx is done, then calls OnShutdown, stops accepting connections and waits up to
// ShutdownTimeout for in-flight requests to finish. It returns nil after a clean shutdown, an error when
// serving failed or in-flight requests outlived ShutdownTimeout (they are then cut off). A Server runs once.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return ErrServerRunning
	}
	// Decide before Serve starts: ServeTLS writes to srv.TLSConfig (HTTP/2 set-up).
	useTLS := s.srv.TLSConfig != nil
	errc := make(chan error, 1)
	go func() {
		if useTLS {
			errc <- s.srv.ServeTLS(s.l, "", "")
			return
		}
		errc <- s.srv.Serve(s.l)
	}()
	s.log.Info().Str("addr", s.Addr().String()).Bool("tls", useTLS).Msg("listening")
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	if s.cfg.OnShutdown != nil {
		s.cfg.OnShutdown()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
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
	_ = s.srv.Close()
	if err := s.l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}
