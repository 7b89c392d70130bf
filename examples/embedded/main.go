// Command embedded is a Go program that runs the bridge inside itself, as a library (package bridge),
// beside the HTTP server and the NATS connection it already has.
//
// What it shows:
//   - the bridge's configuration from the environment as a library call (bridge.ConfigFromEnv); a
//     program that has its own configuration starts from bridge.DefaultConfig instead;
//   - bridge.WithConn: the bridge provisions its streams and runs its roles on the program's
//     *nats.Conn, and leaves it open;
//   - bridge.WithRegisterer: the bridge's metrics in the program's registry, served on the program's
//     own /metrics;
//   - bridge.WithoutListener: the program mounts the bridge's webhook handler in its own
//     http.ServeMux, under a path of its own (POST /hooks/moderation/webhook/{modality}), and the
//     bridge's health and readiness under /bridge/. BRIDGE_PUBLIC_URL is set to match: submissions send
//     webhooks to <it>/webhook/<modality>;
//   - one shutdown: on SIGINT or SIGTERM the bridge stops first (/bridge/readyz 503 at once, webhooks in
//     flight answered, the roles drained in order), then the program's server, then its NATS.
//
// Usage:
//
//	BRIDGE_API_URL=https://api.example/api/v1 BRIDGE_API_KEY=... embedded [-listen :8080] [-public URL] [-s nats://127.0.0.1:4222]
//
// Without -s it starts a nats-server of its own with JetStream (client port -nats-listen, store -data),
// as a program that embeds NATS too would. The upstream must reach the program at -public (default
// http://<the listen address>).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/bridge"
)

func main() {
	fs := flag.NewFlagSet("embedded", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "the program's HTTP address")
	public := fs.String("public", "", "the program's base URL as the upstream reaches it (default http://<listen>)")
	url := fs.String("s", "", "NATS server URL; empty starts a nats-server in the program")
	natsListen := fs.String("nats-listen", "127.0.0.1:4222", "client address of the program's own nats-server")
	data := fs.String("data", "./data", "JetStream store of the program's own nats-server")
	_ = fs.Parse(os.Args[1:])

	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	bcfg, err := bridge.ConfigFromEnv(environ())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = Run(ctx, Config{Listen: *listen, PublicURL: *public, NATSURL: *url, NATSListen: *natsListen, StoreDir: *data,
		Bridge: bcfg, Log: log})
	if err != nil {
		log.Error().Err(err).Msg("stopped")
		os.Exit(1)
	}
}

// Config is the program's configuration.
type Config struct {
	// Listen is the program's HTTP address, e.g. "127.0.0.1:8080" or "127.0.0.1:0".
	Listen string
	// PublicURL is the program's base URL as the upstream reaches it; empty: http://<bound address>.
	PublicURL string
	// NATSURL is the NATS to connect to; empty starts a nats-server in the program, with its client port
	// at NATSListen ("127.0.0.1:-1" for any free port) and its JetStream store in StoreDir.
	NATSURL, NATSListen, StoreDir string
	// Bridge is the bridge's configuration; its BRIDGE_PUBLIC_URL is set here from PublicURL.
	Bridge bridge.Config
	Log    zerolog.Logger
	// Started, when set, is called once the program's server accepts connections, with its address and
	// the NATS URL. The bridge serves a moment later: /bridge/readyz says when.
	Started func(httpAddr, natsURL string)
}

// Webhook paths of the program: where it mounts the bridge's webhook handler, and the prefix that
// BRIDGE_PUBLIC_URL ends with (the bridge's submissions append /webhook/<modality>).
const (
	webhookPattern = "POST /hooks/moderation/webhook/{modality}"
	webhookPrefix  = "/hooks/moderation"
)

// Run runs the program until ctx ends, then stops the bridge, the HTTP server and NATS, in that order.
func Run(ctx context.Context, cfg Config) error {
	nc, closeNATS, err := connectNATS(cfg)
	if err != nil {
		return err
	}
	defer closeNATS()

	// The program's registry, with what it registers itself.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Bound before the bridge is built: the bridge's public URL is the program's.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	public := strings.TrimRight(cfg.PublicURL, "/")
	if public == "" {
		public = "http://" + ln.Addr().String()
	}
	bcfg := cfg.Bridge
	bcfg.PublicURL = public + webhookPrefix
	if err := bcfg.Validate(); err != nil {
		return err
	}
	a, err := bridge.New(ctx, bcfg, cfg.Log, bridge.WithConn(nc), bridge.WithRegisterer(reg), bridge.WithoutListener())
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "a program with a bridge inside")
	})
	mux.Handle(webhookPattern, a.WebhookHandler())
	mux.Handle("GET /bridge/", http.StripPrefix("/bridge", a.Handler())) // /bridge/healthz, /bridge/readyz
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// ReadTimeout bounds a slow webhook so that its answer reaches the upstream inside the upstream's 10 s.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 4 * time.Second, ReadTimeout: 4 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 1)
	go func() {
		serveErr <- srv.Serve(ln)
		cancel() // a server that fails stops the bridge too
	}()
	if cfg.Started != nil {
		cfg.Started(ln.Addr().String(), nc.ConnectedUrlRedacted())
	}

	runErr := a.Run(rctx) // returns once ctx ended and the bridge drained
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	shutErr := srv.Shutdown(sctx)
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return errors.Join(runErr, fmt.Errorf("serve: %w", err))
	}
	return errors.Join(runErr, shutErr)
}

// connectNATS connects to cfg.NATSURL, or starts a nats-server with JetStream in the program and
// connects to it. The returned func closes the connection and stops that server.
func connectNATS(cfg Config) (*nats.Conn, func(), error) {
	opts := []nats.Option{nats.Name("embedded example"), nats.MaxReconnects(-1)}
	if cfg.NATSURL != "" {
		nc, err := nats.Connect(cfg.NATSURL, opts...)
		if err != nil {
			return nil, nil, err
		}
		return nc, nc.Close, nil
	}
	host, port, err := net.SplitHostPort(cfg.NATSListen)
	if err != nil {
		return nil, nil, fmt.Errorf("nats listen %q: %w", cfg.NATSListen, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, nil, fmt.Errorf("nats listen %q: %w", cfg.NATSListen, err)
	}
	dir, err := filepath.Abs(cfg.StoreDir)
	if err != nil {
		return nil, nil, err
	}
	s, err := server.NewServer(&server.Options{ServerName: "embedded", Host: host, Port: p, JetStream: true,
		StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, nil, errors.New("nats-server not ready within 10s")
	}
	stop := func() {
		s.Shutdown()
		s.WaitForShutdown()
	}
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		stop()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); stop() }, nil
}

// environ is the process's environment as a map, for bridge.ConfigFromEnv.
func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}
