// Command lb is the webhook load balancer of docker-compose.yml: the one address the upstream posts
// webhooks to (every bridge's BRIDGE_PUBLIC_URL), in front of the bridges' webhook listeners, for machines
// where no load-balancer image can be pulled. It is built from this repository into a FROM scratch image
// by scripts/images.sh. In production, use the load balancer or Ingress you have instead.
//
// Each request goes to the next backend in turn among those whose /readyz answered 200 at the last probe
// (every -probe-interval), so a bridge that is stopping (/readyz fails at once, while its listener keeps
// answering for BRIDGE_SHUTDOWN_DELAY) or cut from NATS is left out within a probe. A request is tried at
// the next backend when the one it went to cannot be reached or answers 503 (the bridge stored nothing:
// ingest answers only after JetStream acknowledged), so the upstream sees a failure only when no backend
// takes it; a webhook that reaches two bridges is one result (Nats-Msg-Id). When no backend is ready, all
// are tried anyway. When every backend refused a request, it is held and tried again in rounds (100 ms
// apart, doubling to 1 s) for up to -hold (4 s: with a bridge's own 5 s publish wait, inside the upstream's
// 10 s), since a NATS leader election makes every bridge answer 503 for a few seconds and the upstream never
// sends a webhook twice. Docker's DNS round robin (one network alias on both bridges) was tried first and does
// not spread: the upstream's pooled HTTP client keeps reusing one connection, so one bridge took every
// webhook while both were up (docs/OPERATIONS.md, Deployment).
//
// GET /_lb answers the backends' state and counts as JSON (the cluster suite reads it); every other path
// is forwarded. lb -check URL asks a URL and exits 0 on 200: the image's health check, as it has no shell.
//
//	lb -listen :8080 -backend http://bridge-1:8080 -backend http://bridge-2:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lb:", err)
		os.Exit(1)
	}
}

// backendList is the repeatable -backend flag.
type backendList []*url.URL

func (b *backendList) String() string { return fmt.Sprint([]*url.URL(*b)) }

func (b *backendList) Set(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return fmt.Errorf("want http(s)://host:port; got %q", s)
	}
	*b = append(*b, u)
	return nil
}

// run parses the flags and serves until ctx is cancelled, or runs the -check probe.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("lb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var backends backendList
	fs.Var(&backends, "backend", "a bridge's http://host:port (repeat for each)")
	listen := fs.String("listen", ":8080", "listen address")
	interval := fs.Duration("probe-interval", time.Second, "how often each backend's readiness is asked")
	probePath := fs.String("probe-path", "/readyz", "the path that answers 200 while a backend takes requests")
	check := fs.String("check", "", "ask this URL once and exit 0 on 200 (the image's health check)")
	hold := fs.Duration("hold", 4*time.Second, "how long a webhook every backend refused (503) or could not take is "+
		"tried again before its failure is passed on (with a bridge's own 5 s publish wait, inside the upstream's 10 s; it never retries); 0: once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *check != "" {
		return probe(ctx, http.DefaultClient, *check)
	}
	if len(backends) == 0 {
		return errors.New("no -backend")
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	b := newBalancer(backends, log)
	b.hold = *hold
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		IdleTimeout: 60 * time.Second}
	go b.probeEach(ctx, *probePath, *interval)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "backends", backends.String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// probe asks u once and reports why it did not answer 200.
func probe(ctx context.Context, hc *http.Client, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) //nolint:errcheck // drained for reuse
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	return nil
}

// hopHeaders are the hop-by-hop headers (RFC 9110 7.6.1), never forwarded.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// dropHop removes the hop-by-hop headers from h, those Connection names included.
func dropHop(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			h.Del(strings.TrimSpace(f))
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}
