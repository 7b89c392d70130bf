package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// Defaults of [ServerConfig]. An answer is written within ReadTimeout + Config.PublishTimeout of a request's
// first byte (4 s + at most 5 s), inside the upstream's 10 s client timeout; WriteTimeout then bounds the
// write itself, which only a peer that stops reading can hold up.
const (
	// DefaultReadTimeout bounds reading one request, from its first byte to the end of its body (on a new
	// connection, from the connection's opening).
	DefaultReadTimeout = 4 * time.Second
	// DefaultWriteTimeout bounds writing an answer, once the handler has returned.
	DefaultWriteTimeout = time.Second
	// DefaultIdleTimeout closes idle keep-alive connections.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxHeaderBytes bounds the request line and headers.
	DefaultMaxHeaderBytes = 16 << 10
	// DefaultMaxConns bounds the open connections, unless MaxBody calls for fewer (see MaxConns).
	DefaultMaxConns = 4096
	// MinDefaultMaxConns is the fewest connections the default bound allows, however large MaxBody is.
	MinDefaultMaxConns = 256
	// BodyMemory is what the default connection bound keeps the bodies being read within: MaxConns
	// defaults to BodyMemory / MaxBody, between MinDefaultMaxConns and DefaultMaxConns.
	BodyMemory = 256 << 20
	// DefaultShutdownTimeout leaves room for in-flight webhooks to get their ack (at most PublishTimeout).
	DefaultShutdownTimeout = 10 * time.Second
)

// ServerConfig is what [Listen] needs. Only Handler is required.
type ServerConfig struct {
	// Addr is the TCP address to listen on, e.g. ":8080" or "127.0.0.1:0"; empty means ":8080".
	Addr string
	// Handler serves the requests, normally [Handler.Serve]. Required.
	Handler fasthttp.RequestHandler
	// ErrorHandler answers a request the server could not read (headers too large, body too large, a
	// read timeout, a malformed request), normally [Handler.ServeError]; nil answers from the same error
	// table without counting. The connection is closed after the answer.
	ErrorHandler func(ctx *fasthttp.RequestCtx, err error)
	// Log receives the server's own errors (TLS handshakes, unreadable requests); it is tagged
	// component=ingest.http.
	Log zerolog.Logger
	// ReadTimeout, WriteTimeout and IdleTimeout are as the Default… constants say; 0 means the constant.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration
	// MaxHeaderBytes bounds the request line and headers; 0 means DefaultMaxHeaderBytes. Larger headers
	// are answered 431.
	MaxHeaderBytes int
	// MaxBody bounds a request body, which is read whole before the handler runs; 0 means DefaultMaxBody. A
	// larger one is answered 413 without being read (or as soon as a chunked one passes the bound). So the
	// bodies held in memory are at most MaxConns × MaxBody.
	MaxBody int64
	// MaxConns bounds the open connections. A connection past it is still accepted, and the connection that
	// has waited longest without a request in the handler (idle keep-alive, silent, or still sending its
	// request) is closed instead, so idle or slow clients can neither crowd out a real webhook nor exhaust
	// file descriptors. 0 means BodyMemory / MaxBody, between MinDefaultMaxConns and DefaultMaxConns
	// (4096 at the default MaxBody); negative means no bound.
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
		{"ShutdownTimeout", c.ShutdownTimeout},
	} {
		if f.d < 0 {
			return fmt.Errorf("%w: %s: %v is negative", ErrInvalidConfig, f.name, f.d)
		}
	}
	return nil
}

// Server is the HTTP listener of the ingest role, built on fasthttp: a webhook costs less CPU than under
// net/http (see docs/PERFORMANCE.md), which is what lets ingest run at the bare floor. [Listen] binds it;
// [Server.Run] serves until its ctx is done.
type Server struct {
	cfg ServerConfig
	l   net.Listener
	srv *fasthttp.Server
	log zerolog.Logger
	// conns tracks the open connections, bounding them by MaxConns, and cuts them off after a shutdown
	// that ran out of time.
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
	conns := newConnLimiter(cfg.MaxConns)
	onError := cfg.ErrorHandler
	if onError == nil {
		onError = func(ctx *fasthttp.RequestCtx, err error) { writeErrorBody(ctx, requestError(err, cfg.MaxBody)) }
	}
	srv := &fasthttp.Server{
		Handler:      conns.wrap(cfg.Handler),
		ErrorHandler: onError,
		ConnState:    conns.connState,
		Logger:       serverLogger{lg},
		// The read buffer bounds the request line and headers: past it the request is answered 431.
		ReadBufferSize:     cfg.MaxHeaderBytes,
		ReadTimeout:        cfg.ReadTimeout,
		WriteTimeout:       cfg.WriteTimeout,
		IdleTimeout:        cfg.IdleTimeout,
		MaxRequestBodySize: int(cfg.MaxBody),
		// Connections are bounded by conns, which evicts rather than refuses.
		Concurrency:                  fasthttp.DefaultConcurrency,
		NoDefaultServerHeader:        true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
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

// serverLogger hands fasthttp's messages to zerolog at info level: they are about connections that
// clients broke (a TLS handshake, a malformed request), not about the bridge.
type serverLogger struct{ log zerolog.Logger }

func (l serverLogger) Printf(format string, args ...any) { l.log.Info().Msgf(format, args...) }

// Evicted is the number of connections closed so far to stay within MaxConns.
func (s *Server) Evicted() uint64 { return s.conns.evicted.Load() }

// Addr is the address the server is bound to (with the real port when Addr asked for port 0).
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Run serves until ctx is done, then calls OnShutdown, stops accepting connections and waits up to
// ShutdownTimeout for in-flight requests to finish. It returns nil after a clean shutdown, an error when
// serving failed or in-flight requests outlived ShutdownTimeout (they are then cut off). A Server runs once.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return ErrServerRunning
	}
	useTLS := s.srv.TLSConfig != nil
	ln := s.l
	if useTLS {
		ln = tls.NewListener(s.l, s.srv.TLSConfig)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
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
	err := s.srv.ShutdownWithContext(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, net.ErrClosed) {
		s.log.Error().Err(serr).Msg("serve ended")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		s.conns.closeAll()
		return fmt.Errorf("shut down %s: %w", s.Addr(), err)
	}
	s.log.Info().Msg("stopped")
	return nil
}

// Close stops the server at once, cutting off in-flight requests; use it when Run was never called. It is
// idempotent.
func (s *Server) Close() error {
	err := s.l.Close()
	s.conns.closeAll()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}
