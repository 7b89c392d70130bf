package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"time"
)

var healthcheckCommand = &command{
	name: "healthcheck", args: "[-addr ADDR]", summary: "exit 0 when this machine's bridge answers /readyz with 200 (for HEALTHCHECK)",
	run: runHealthcheck,
}

const healthcheckUsage = `bridge healthcheck [-addr ADDR] [-path /readyz] [-timeout D]

Asks a bridge on this machine for GET http://<addr>/readyz and exits 0 when it answers 200, 1 otherwise:
a HEALTHCHECK for the image, which has no shell or curl. The address defaults to
BRIDGE_ADMIN_ADDR when set, else BRIDGE_HTTP_ADDR (":8080" dials 127.0.0.1:8080). With
BRIDGE_TLS_CERT_FILE set on the bridge, the listener speaks HTTPS: give -addr https://host:port
(the certificate is not verified: the check is of this machine's own process).`

// runHealthcheck is bridge healthcheck.
func runHealthcheck(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge healthcheck", healthcheckUsage, c)
	addr := fs.String("addr", "", "the bridge's health listener, host:port or a URL; default from BRIDGE_ADMIN_ADDR or BRIDGE_HTTP_ADDR")
	path := fs.String("path", "/readyz", "the path to ask: /readyz (ready for work) or /healthz (alive)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.noArgs(args); err != nil {
		return err
	}
	url := healthURL(*addr, c.env) + *path
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{fmt.Errorf("bridge healthcheck: %w", err)}
	}
	resp, err := insecureLocalClient.Do(req)
	if err != nil {
		return fmt.Errorf("bridge healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bridge healthcheck: %s answered %s", url, resp.Status)
	}
	fmt.Fprintf(c.stdout, "%s: %s\n", url, resp.Status)
	return nil
}

// healthURL is the base URL of the health endpoints: -addr, else BRIDGE_ADMIN_ADDR, else BRIDGE_HTTP_ADDR
// (default :8080), made dialable from this machine.
func healthURL(addr string, env map[string]string) string {
	if addr == "" {
		addr = env[envPrefix+"ADMIN_ADDR"]
	}
	if addr == "" {
		addr = env[envPrefix+"HTTP_ADDR"]
	}
	if addr == "" {
		addr = ":8080"
	}
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	return "http://" + loopback(addr)
}

// insecureLocalClient asks this machine's own bridge. It does not verify the certificate: the listener's
// certificate names the public host, not 127.0.0.1, and what is checked is the process, not its identity.
var insecureLocalClient = &http.Client{Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a local health probe
}}
