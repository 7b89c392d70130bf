package natsx

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// ServerConfig configures the embedded nats-server.
type ServerConfig struct {
	// Name is the server name; default "bridge".
	Name string
	// Listen is the client address host:port; port 0 or -1 picks a random one. Default 127.0.0.1:4222.
	Listen string
	// StoreDir is the JetStream store directory. Required: an empty one would be a shared temp dir.
	StoreDir string
	// SyncInterval is how often JetStream syncs to disk; zero keeps the server default (2m).
	SyncInterval time.Duration
	// SyncAlways syncs every write: survives power loss at about 1/6 of the throughput.
	SyncAlways bool
	// Auth, when set, makes the server authenticate ([AuthConfig]); nil: no authentication (tests).
	Auth *AuthConfig
	// Domain is the server's JetStream domain (leaf-node and hub deployments); empty for none.
	Domain string
	// Log receives the server's log lines.
	Log zerolog.Logger
	// ReadyTimeout bounds the wait for the server to accept connections; default 10s.
	ReadyTimeout time.Duration
}

func (c *ServerConfig) setDefaults() {
	if c.Name == "" {
		c.Name = "bridge"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:4222"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 10 * time.Second
	}
}

// Validate reports the first invalid field.
func (c *ServerConfig) Validate() error {
	if c.StoreDir == "" {
		return fmt.Errorf("embedded nats: store dir: must not be empty")
	}
	if _, _, err := splitHostPort(c.Listen); err != nil {
		return fmt.Errorf("embedded nats: listen %q: %w", c.Listen, err)
	}
	if c.SyncInterval < 0 {
		return fmt.Errorf("embedded nats: sync interval: must not be negative")
	}
	return nil
}

// RunEmbedded starts an embedded nats-server with JetStream and returns once it accepts connections.
// The caller shuts it down with Shutdown and WaitForShutdown after draining its clients.
func RunEmbedded(cfg ServerConfig) (*server.Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, err := serverOptions(cfg)
	if err != nil {
		return nil, err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.SetLoggerV2(serverLogger{cfg.Log.With().Str("component", "nats-server").Logger()}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(cfg.ReadyTimeout) {
		s.Shutdown()
		return nil, fmt.Errorf("%w: listen %s, store %s: not accepting connections within %v",
			ErrNotReady, cfg.Listen, cfg.StoreDir, cfg.ReadyTimeout)
	}
	return s, nil
}

// serverOptions are the embedded server's options: the operator's configuration file, if any, with the
// bridge's listener, JetStream store and authorization on top.
func serverOptions(cfg ServerConfig) (*server.Options, error) {
	opts := &server.Options{}
	if cfg.Auth != nil && cfg.Auth.ConfigFile != "" {
		fopts, err := server.ProcessConfigFile(cfg.Auth.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("BRIDGE_NATS_CONFIG: %w", err)
		}
		opts = fopts
	}
	host, port, _ := splitHostPort(cfg.Listen)
	opts.ServerName, opts.Host, opts.Port, opts.NoSigs = cfg.Name, host, port, true
	opts.JetStream, opts.JetStreamDomain, opts.StoreDir = true, cfg.Domain, cfg.StoreDir
	opts.SyncInterval, opts.SyncAlways = cfg.SyncInterval, cfg.SyncAlways
	if cfg.Auth != nil {
		if err := applyAuth(opts, cfg.Auth, cfg.Listen); err != nil {
			return nil, err
		}
	}
	return opts, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("invalid port %q", p)
	}
	if port == 0 {
		port = -1
	}
	return host, port, nil
}

// serverLogger adapts zerolog to server.Logger. Fatalf logs at error level and never exits the process.
type serverLogger struct{ log zerolog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Info().Msgf(format, v...) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
