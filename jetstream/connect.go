package jetstream

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// ConnConfig configures the client connection to NATS.
type ConnConfig struct {
	// URLs is a comma-separated list of servers; ignored when InProcess is set.
	URLs string
	// InProcess connects to an embedded server without a socket.
	InProcess nats.InProcessConnProvider
	// Name is the client name the servers show.
	Name string
	// CredsFile is a NATS credentials file.
	CredsFile string
	// TLSCertFile and TLSKeyFile are the client certificate; TLSCAFile the roots to trust.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// Log receives one line per disconnect, reconnect and async error.
	Log zerolog.Logger
	// Closed, when set, is closed once the connection is closed for good (after Drain).
	Closed chan struct{}
}

// Connect opens a connection that reconnects forever with backoff and jitter, logging each transition.
// The first connect to an external cluster is retried in the background too, so a bridge can start
// before its NATS cluster does.
func Connect(cfg ConnConfig) (*nats.Conn, error) {
	log := cfg.Log.With().Str("component", "nats").Logger()
	name := cfg.Name
	if name == "" {
		name = "bridge"
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return min(time.Duration(attempts)*250*time.Millisecond, 5*time.Second)
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err == nil && nc.IsDraining() || nc.IsClosed() {
				return // our own drain or close, logged by the closed handler
			}
			log.Warn().Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			log.Info().Msg("nats connection closed")
			if cfg.Closed != nil {
				close(cfg.Closed)
			}
		}),
	}
	if cfg.InProcess != nil {
		opts = append(opts, nats.InProcessServer(cfg.InProcess))
	} else {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		if cfg.TLSCertFile == "" || cfg.TLSKeyFile == "" {
			return nil, errors.New("nats tls: both a certificate and a key file are needed")
		}
		opts = append(opts, nats.ClientCert(cfg.TLSCertFile, cfg.TLSKeyFile))
	}
	if cfg.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCAFile))
	}
	servers := cfg.URLs
	if cfg.InProcess != nil {
		servers = ""
	}
	nc, err := nats.Connect(servers, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", redact(servers), err)
	}
	return nc, nil
}

// redact hides user info in NATS URLs.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
