package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clusterTestEnv turns the suite on: 1 builds the images first, reuse runs those already tagged :local.
const clusterTestEnv = "BRIDGE_CLUSTER_TEST"

// repoRoot is the module root, where docker-compose.yml, .env and scripts/images.sh are.
var repoRoot = filepath.Join("..", "..")

// publishedPorts are docker-compose.yml's port variables; set to empty, the engine picks each port.
var publishedPorts = []string{"NATS_PORT", "NATS_MONITOR_PORT", "NATS_2_PORT", "NATS_3_PORT", "BRIDGE_1_PORT", "BRIDGE_2_PORT",
	"LB_PORT", "SIMULATOR_PORT"}

// composeScript runs docker compose (v2) or docker-compose (1.29), whichever is installed: the one helper
// the suite and the documentation use.
var composeScript = filepath.Join("scripts", "compose.sh")

// requireEngine skips the test unless the suite is asked for and a Docker engine answers.
func requireEngine(t *testing.T) string {
	t.Helper()
	mode := os.Getenv(clusterTestEnv)
	if mode == "" {
		t.Skipf("set %s=1 to run the compose cluster under faults (needs a Docker engine; minutes)", clusterTestEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("%s is set but no Docker engine answers docker info: %v %s", clusterTestEnv, err, bytes.TrimSpace(out))
	}
	return mode
}

// project is one compose project of docker-compose.yml, driven through scripts/compose.sh.
type project struct {
	t    *testing.T
	name string
	env  []string
	// mu guards ids.
	mu  sync.Mutex
	ids map[string]string
}

// composeVersion is the first line of the version of the compose tool scripts/compose.sh runs; the test
// fails when there is none.
func composeVersion(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("bash", composeScript, "version")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/compose.sh version: %v\n%s", err, out)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return first
}

// buildImages runs scripts/images.sh, which also writes .env with the NATS passwords when there is none.
func buildImages(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "scripts", "images.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/images.sh: %v\n%s", err, out)
	}
	t.Logf("scripts/images.sh built the images in %s", time.Since(start).Round(100*time.Millisecond))
}

// up starts the default profile under a project name of its own and registers its teardown (down -v),
// which runs whatever the outcome; on failure the containers' last log lines are printed first.
func up(t *testing.T) *project {
	t.Helper()
	t.Logf("compose: %s (scripts/compose.sh)", composeVersion(t))
	p := &project{t: t, name: fmt.Sprintf("bridgecluster%d", os.Getpid()), ids: map[string]string{}}
	p.env = os.Environ()
	for _, v := range publishedPorts {
		p.env = append(p.env, v+"=")
	}
	t.Cleanup(func() {
		if t.Failed() {
			// Every container's log, kept after the teardown for the post-mortem.
			out, _ := p.compose(2*time.Minute, "logs", "--no-color", "--timestamps")
			path := filepath.Join(os.TempDir(), p.name+".log")
			if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
				t.Logf("write logs: %v", err)
			}
			t.Logf("the containers' logs are in %s", path)
		}
		start := time.Now()
		if out, err := p.compose(3*time.Minute, "down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
			t.Errorf("down -v: %v\n%s", err, out)
		}
		t.Logf("down -v in %s", time.Since(start).Round(100*time.Millisecond))
	})
	start := time.Now()
	if out, err := p.compose(5*time.Minute, "up", "-d"); err != nil {
		t.Fatalf("up -d: %v\n%s", err, out)
	}
	t.Logf("up -d in %s", time.Since(start).Round(100*time.Millisecond))
	return p
}

// compose runs the compose tool on the project, bounded by d.
func (p *project) compose(d time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	argv := append([]string{composeScript, "-p", p.name, "-f", "docker-compose.yml"}, args...)
	cmd := exec.CommandContext(ctx, "bash", argv...)
	cmd.Dir, cmd.Env = repoRoot, p.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// docker runs the docker CLI, bounded by d.
func docker(d time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, s)
	}
	return s, nil
}

// id is the container of service svc (the same across stop, start and restart).
func (p *project) id(svc string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if id, ok := p.ids[svc]; ok {
		return id, nil
	}
	out, err := p.compose(time.Minute, "ps", "-q", svc)
	id := strings.TrimSpace(out)
	if err != nil || id == "" {
		return "", fmt.Errorf("no container for %s: %v %s", svc, err, out)
	}
	p.ids[svc] = id
	return id, nil
}

// mustID is id, failing the test on error.
func (p *project) mustID(svc string) string {
	p.t.Helper()
	id, err := p.id(svc)
	if err != nil {
		p.t.Fatal(err)
	}
	return id
}

// hostPort is the 127.0.0.1 address at which svc publishes port now: a restarted container gets a new
// one from the engine.
func (p *project) hostPort(svc, port string) (string, error) {
	id, err := p.id(svc)
	if err != nil {
		return "", err
	}
	out, err := docker(10*time.Second, "port", id, port+"/tcp")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "127.0.0.1:") {
			return line, nil
		}
	}
	return "", fmt.Errorf("%s publishes %s at %q, want 127.0.0.1 only", svc, port, out)
}

// Dial implements nats.CustomDialer: nats-N:4222 is dialled at the loopback port that node publishes.
func (p *project) Dial(network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	hp, err := p.hostPort(host, port)
	if err != nil {
		return nil, err
	}
	return net.DialTimeout(network, hp, 2*time.Second)
}

// ready reports why bridge svc is not ready: its /readyz, through its published port.
func (p *project) ready(svc string) error {
	hp, err := p.hostPort(svc, "8080")
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + hp + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s /readyz %d", svc, resp.StatusCode)
	}
	return nil
}

// readyInside reports why bridge svc is not ready, asked inside its container by the image's health
// check (bridge healthcheck: /readyz), which needs no network.
func (p *project) readyInside(svc string) error {
	id, err := p.id(svc)
	if err != nil {
		return err
	}
	_, err = docker(15*time.Second, "exec", id, "/usr/local/bin/bridge", "healthcheck")
	return err
}

// natsHealthy reports why NATS node svc is not healthy: the full /healthz (its streams and consumers
// current, not only JetStream on), asked inside the container by the bridge binary the image has.
func (p *project) natsHealthy(svc string) error {
	id, err := p.id(svc)
	if err != nil {
		return err
	}
	_, err = docker(15*time.Second, "exec", id, "/usr/local/bin/bridge", "healthcheck", "-addr", "127.0.0.1:8222", "-path", "/healthz")
	return err
}

// running reports whether svc's container is running.
func (p *project) running(svc string) (bool, error) {
	id, err := p.id(svc)
	if err != nil {
		return false, err
	}
	out, err := docker(10*time.Second, "inspect", "--format", "{{.State.Running}}", id)
	return out == "true", err
}

// network is the name of the compose network net (front or back) that svc is on.
func (p *project) network(svc, net string) string {
	p.t.Helper()
	out, err := docker(10*time.Second, "inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", p.mustID(svc))
	if err != nil {
		p.t.Fatal(err)
	}
	nets := strings.Fields(out)
	for _, n := range nets {
		if strings.HasSuffix(n, "_"+net) {
			return n
		}
	}
	p.t.Fatalf("%s is on networks %q, none of them %s", svc, nets, net)
	return ""
}

// getJSON decodes the answer of GET path at svc's port, through its published port.
func (p *project) getJSON(svc, port, path string, v any) error {
	hp, err := p.hostPort(svc, port)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 3 * time.Second}
	resp, err := hc.Get("http://" + hp + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", svc, path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// waitFor retries fn every 250 ms until it returns nil, failing the test with fn's last error after
// timeout; it returns how long the condition took. (Docker CLI calls are too slow for natstest's 20 ms.)
func waitFor(tb testing.TB, timeout time.Duration, what string, fn func() error) time.Duration {
	tb.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := fn()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// readEnv reads KEY=VALUE lines of the repository's .env (scripts/images.sh writes it).
func readEnv(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, ".env"))
	if errors.Is(err, os.ErrNotExist) {
		t.Fatal("no .env: run scripts/images.sh, which writes the NATS passwords, or BRIDGE_CLUSTER_TEST=1")
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out
}
