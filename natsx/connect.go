package natsx

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// DefaultConnectWait is how long [Connect] waits for the first connection to external servers.
const DefaultConnectWait = 30 * time.Second

// PingInterval is how often the client pings its server; with [MaxPingsOut] unanswered the connection
// is found dead and the client reconnects elsewhere. nats.go's default (2 min, 2 out) let a bridge cut
// from the network by a partition answer /readyz 200 for minutes while nothing it did reached NATS; at
// 5 s it sees the cut within 10 to 15 s (test/cluster, partition). A ping is a few bytes.
const PingInterval = 5 * time.Second

// MaxPingsOut is how many pings may be unanswered before the connection is found dead.
const MaxPingsOut = 2

// ConnConfig configures the client connection to NATS.
type ConnConfig struct {
	// URLs is a comma-separated list of servers; ignored when InProcess is set. A URL may carry a user
	// and password (nats://user:pass@host:4222); they are redacted in every log line and error.
	URLs string
	// InProcess connects to an embedded server without a socket.
	InProcess nats.InProcessConnProvider
	// Name is the client name the servers show.
	Name string
	// CredsFile is a NATS credentials file (user JWT and nkey seed).
	CredsFile string
	// Identity, when set, authenticates with this nkey (the bridge's own user on its embedded server).
	Identity *Identity
	// TLSCertFile and TLSKeyFile are the client certificate; TLSCAFile the roots to trust.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// Log receives one line per disconnect, reconnect and async error.
	Log zerolog.Logger
	// Closed, when set, is closed once the connection is closed for good (after Drain).
	Closed chan struct{}
	// ConnectWait bounds the wait for the first connection to external servers; 0 means
	// DefaultConnectWait.
	ConnectWait time.Duration
}

// Connect opens a connection that reconnects forever with backoff and jitter, logging each transition.
// The first connect to external servers is retried for up to ConnectWait, so a bridge can start a little
// before its NATS cluster does; if no connection comes, or the servers refuse it for good (wrong
// credentials), the error names the servers (passwords redacted) and the last failure, e.g.
// "nats: authorization violation" or a TLS verification error.
func Connect(cfg ConnConfig) (*nats.Conn, error) {
	// lastDialErr keeps the last failure to reach a server; nats.go keeps only handshake and auth
	// failures in LastError.
	var lastDialErr atomic.Pointer[error]
	opts, err := connOptions(cfg, &lastDialErr)
	if err != nil {
		return nil, err
	}
	servers := cfg.URLs
	if cfg.InProcess != nil {
		servers = ""
	}
	nc, err := nats.Connect(servers, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", Redact(servers), err)
	}
	if cfg.InProcess != nil {
		return nc, nil
	}
	wait := cfg.ConnectWait
	if wait <= 0 {
		wait = DefaultConnectWait
	}
	if err := awaitConnected(nc, wait, &lastDialErr); err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", Redact(servers), err)
	}
	return nc, nil
}

// connOptions are the connection's options: reconnect forever with backoff, every transition logged.
func connOptions(cfg ConnConfig, lastDialErr *atomic.Pointer[error]) ([]nats.Option, error) {
	log := cfg.Log.With().Str("component", "nats").Logger()
	name := cfg.Name
	if name == "" {
		name = "bridge"
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOut),
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
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			lastDialErr.Store(&err)
			log.Debug().Err(err).Msg("nats connect attempt failed")
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
	if cfg.Identity != nil {
		opts = append(opts, cfg.Identity.Option())
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
	return opts, nil
}

// awaitConnected waits up to wait for the first connection, and closes nc when it does not come.
// Why poll: nats.go has no callback for "the initial connect attempt failed for good"; the state is cheap
// to read and the wait happens once, at start-up.
func awaitConnected(nc *nats.Conn, wait time.Duration, lastDialErr *atomic.Pointer[error]) error {
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !nc.IsConnected() {
		if closed := nc.IsClosed(); closed || time.Now().After(deadline) {
			cause := nc.LastError()
			if cause == nil {
				if p := lastDialErr.Load(); p != nil {
					cause = *p
				}
			}
			if cause == nil {
				cause = nats.ErrNoServers
			}
			nc.Close()
			if closed {
				return fmt.Errorf("refused: %w", cause)
			}
			return fmt.Errorf("not connected within %v: %w", wait, cause)
		}
		<-tick.C
	}
	return nil
}

// Redact hides the secrets in a comma-separated list of NATS URLs, for logs and errors: the whole user
// information (user and password, or a token given as the user alone) becomes xxxxx. A URL that does not
// parse is hidden whole, since it may still hold a secret.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		switch {
		case err != nil:
			parts[i] = "[unparsable URL]"
		case u.User != nil:
			u.User = url.User("xxxxx")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// NewJetStream is the JetStream context of nc in domain (the JetStream domain of a leaf-node or hub
// deployment); empty domain: the account's own.
func NewJetStream(nc *nats.Conn, domain string) (jetstream.JetStream, error) {
	if domain == "" {
		return jetstream.New(nc)
	}
	return jetstream.NewWithDomain(nc, domain)
}
