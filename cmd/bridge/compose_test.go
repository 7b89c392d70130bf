package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"

	"github.com/evershield/bridge/bridge"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/ops"
	"github.com/evershield/bridge/upstream/simulator"
)

// repoFile is a path relative to the module root.
func repoFile(name string) string { return filepath.Join("..", "..", name) }

// composeFile is the part of docker-compose.yml the tests read.
type composeFile struct {
	Services map[string]struct {
		Image       string   `yaml:"image"`
		Build       any      `yaml:"build"`
		Profiles    []string `yaml:"profiles"`
		Command     []string `yaml:"command"`
		Environment any      `yaml:"environment"`
		Ports       []string `yaml:"ports"`
		Healthcheck struct {
			Test    []string `yaml:"test"`
			Disable bool     `yaml:"disable"`
		} `yaml:"healthcheck"`
		// Networks is a list of names or a map of name to its options.
		Networks any `yaml:"networks"`
	} `yaml:"services"`
	Networks map[string]any `yaml:"networks"`
}

// serviceNetwork is a service's options on one network.
type serviceNetwork struct {
	Aliases  []string `yaml:"aliases"`
	Priority int      `yaml:"priority"`
}

// networksOf returns the networks a service joins, in list or map form; none means compose's default.
func networksOf(t *testing.T, c composeFile, name string) map[string]serviceNetwork {
	t.Helper()
	out := map[string]serviceNetwork{}
	switch n := c.Services[name].Networks.(type) {
	case nil:
		out["default"] = serviceNetwork{}
	case []any:
		for _, v := range n {
			out[fmt.Sprint(v)] = serviceNetwork{}
		}
	case map[string]any:
		for k, v := range n {
			var sn serviceNetwork
			b, _ := yaml.Marshal(v)
			if err := yaml.Unmarshal(b, &sn); err != nil {
				t.Fatalf("service %s: network %s: %v", name, k, err)
			}
			out[k] = sn
		}
	default:
		t.Fatalf("service %s: networks is a %T", name, n)
	}
	return out
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(repoFile("docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// envOf returns a service's environment, in map or list form.
func envOf(t *testing.T, name string, env any) map[string]string {
	t.Helper()
	out := map[string]string{}
	switch e := env.(type) {
	case nil:
	case map[string]any:
		for k, v := range e {
			out[k] = fmt.Sprint(v)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
			out[k] = v
		}
	default:
		t.Fatalf("service %s: environment is a %T", name, env)
	}
	return out
}

// bridgeServices are the compose services that run bridge run: those with BRIDGE_* variables.
func bridgeServices(t *testing.T, c composeFile) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for name, s := range c.Services {
		env := envOf(t, name, s.Environment)
		for k := range env {
			if strings.HasPrefix(k, envPrefix) {
				out[name] = env
				break
			}
		}
	}
	return out
}

// TestComposeFileMatchesConfig keeps docker-compose.yml from drifting: every BRIDGE_* variable a service
// sets is a field of bridge.Config and the whole environment parses, and the topology is the documented one.
func TestComposeFileMatchesConfig(t *testing.T) {
	c := readCompose(t)
	known := map[string]bool{}
	for _, k := range envKeys() {
		known[k] = true
	}
	bridges := bridgeServices(t, c)
	if len(bridges) < 2 {
		t.Fatalf("docker-compose.yml runs %d bridge services, want at least 2", len(bridges))
	}
	reconcilers := 0
	for name, env := range bridges {
		for k := range env {
			if strings.HasPrefix(k, envPrefix) && !known[k] {
				t.Errorf("service %s sets %s, which bridge.Config does not have", name, k)
			}
		}
		cfg, err := parseConfig(env)
		if err != nil {
			t.Errorf("service %s: its environment does not parse:\n%v", name, err)
			continue
		}
		if cfg.Replicas != 3 {
			t.Errorf("service %s: BRIDGE_REPLICAS=%d, want 3 on the cluster", name, cfg.Replicas)
		}
		if cfg.Has(bridge.RoleReconcile) {
			reconcilers++
		}
		for _, r := range []string{bridge.RoleIngest, bridge.RoleVerify, bridge.RoleSubmit} {
			if !cfg.Has(r) {
				t.Errorf("service %s lacks role %s", name, r)
			}
		}
		// Every NATS URL names a JetStream node of the file.
		urls := strings.Split(cfg.NATSURL, ",")
		if len(urls) != 3 {
			t.Errorf("service %s: BRIDGE_NATS_URL %q, want the 3 cluster nodes", name, cfg.NATSURL)
		}
		for _, u := range urls {
			// Each URL signs in as the bridges' user, its password from .env (deploy/docker/nats-users.conf).
			hostPort, ok := strings.CutPrefix(u, "nats://bridge:${NATS_BRIDGE_PASSWORD}@")
			host := strings.Split(hostPort, ":")[0]
			s, node := c.Services[host]
			if !ok || !node || s.Image != natsImage || !slices.Contains(s.Command, "--js") ||
				!slices.Contains(s.Command, "--config=/etc/nats/users.conf") {
				t.Errorf("service %s: NATS URL %s is not the bridge user at a JetStream node of image %s with the users' configuration",
					name, u, natsImage)
			}
		}
		// The upstream is the simulator service running the same image.
		if !strings.Contains(cfg.APIURL, "simulator:") {
			t.Errorf("service %s: BRIDGE_API_URL %q, want the simulator service", name, cfg.APIURL)
		}
	}
	if reconcilers < 2 {
		t.Errorf("%d services run the reconcile role; want 2 for failover", reconcilers)
	}
	sim := c.Services["simulator"]
	if len(sim.Command) == 0 || sim.Command[0] != "simulate" {
		t.Errorf("simulator service command %v, want bridge simulate", sim.Command)
	}
	if !sim.Healthcheck.Disable {
		t.Error("simulator service keeps the image's HEALTHCHECK, which asks a bridge's /readyz")
	}
	// Every bridge is healthy by the image's own check, a command of the binary.
	for name := range bridges {
		hc := c.Services[name].Healthcheck.Test
		if len(hc) < 3 || hc[0] != "CMD" || hc[1] != imageBinary || lookup(commands(), hc[2]) != healthcheckCommand {
			t.Errorf("service %s: healthcheck %q, want [CMD %s healthcheck]", name, hc, imageBinary)
		}
	}
	// The NATS nodes are healthy by the bridge's binary in their image, asking the monitoring port.
	for name, s := range c.Services {
		if s.Image != natsImage {
			continue
		}
		hc := s.Healthcheck.Test
		if len(hc) < 3 || hc[0] != "CMD" || hc[1] != imageBinary || lookup(commands(), hc[2]) != healthcheckCommand ||
			!slices.Contains(hc, "127.0.0.1:8222") || !slices.Contains(s.Command, "--http_port=8222") {
			t.Errorf("service %s: healthcheck %q with command %q, want bridge healthcheck of its --http_port=8222", name, hc, s.Command)
		}
	}
	// The default profile needs no registry: it runs only the images scripts/images.sh builds, and
	// publishes ports on loopback only.
	built := builtImages(t)
	for name, s := range c.Services {
		if len(s.Profiles) > 0 {
			continue
		}
		if !slices.Contains(built, s.Image) || s.Build != nil {
			t.Errorf("service %s (default profile) runs image %q (build %v), want one of %q built by scripts/images.sh", name, s.Image, s.Build, built)
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("service %s publishes %q, want 127.0.0.1 only", name, p)
			}
		}
	}
	// Prometheus scrapes every bridge service.
	prom, err := os.ReadFile(repoFile("deploy/prometheus/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, env := range bridges {
		port := strings.TrimPrefix(env[envPrefix+"HTTP_ADDR"], ":")
		if !strings.Contains(string(prom), fmt.Sprintf("%q", name+":"+port)) {
			t.Errorf("deploy/prometheus/prometheus.yml does not scrape %s:%s", name, port)
		}
	}
}

// TestComposeNetworks checks the compose file's two networks (issue 26): front carries the upstream's
// traffic (the simulator, the webhook load balancer, the bridges' HTTP side), back carries NATS; the
// simulator cannot reach NATS, NATS is not on front, and every bridge is on both, front first, so that
// its published port stays up while it is cut from back. Prometheus, on front, reaches the bridges.
func TestComposeNetworks(t *testing.T) {
	c := readCompose(t)
	for _, n := range []string{"front", "back"} {
		if _, ok := c.Networks[n]; !ok {
			t.Errorf("docker-compose.yml declares no network %s", n)
		}
	}
	on := func(name string) (front, back bool) {
		nets := networksOf(t, c, name)
		_, front = nets["front"]
		_, back = nets["back"]
		if len(nets) != btoi(front)+btoi(back) {
			t.Errorf("service %s joins networks %v, want front or back only", name, slices.Sorted(maps.Keys(nets)))
		}
		return front, back
	}
	bridges := bridgeServices(t, c)
	for name, s := range c.Services {
		front, back := on(name)
		_, isBridge := bridges[name]
		switch {
		case s.Image == natsImage && (front || !back):
			t.Errorf("NATS node %s: on front %v, on back %v; want back only", name, front, back)
		case isBridge && (!front || !back):
			t.Errorf("bridge %s: on front %v, on back %v; want both", name, front, back)
		case isBridge:
			nets := networksOf(t, c, name)
			if nets["front"].Priority <= nets["back"].Priority {
				t.Errorf("bridge %s joins back before front (priority %d, %d): its published port would be on back",
					name, nets["front"].Priority, nets["back"].Priority)
			}
		case (name == "simulator" || name == "prometheus") && (!front || back):
			t.Errorf("service %s: on front %v, on back %v; want front only", name, front, back)
		}
	}
}

// TestComposeOneWebhookAddress checks that the bridges share one BRIDGE_PUBLIC_URL, the webhook load
// balancer's, which is on front only and forwards to every bridge's HTTP port.
func TestComposeOneWebhookAddress(t *testing.T) {
	c := readCompose(t)
	bridges := bridgeServices(t, c)
	urls := map[string]bool{}
	for _, env := range bridges {
		urls[env[envPrefix+"PUBLIC_URL"]] = true
	}
	if len(urls) != 1 {
		t.Fatalf("the bridges' BRIDGE_PUBLIC_URL are %q, want one address for all", slices.Sorted(maps.Keys(urls)))
	}
	public := slices.Collect(maps.Keys(urls))[0]
	host, _, _ := strings.Cut(strings.TrimPrefix(public, "http://"), ":")
	lb, ok := c.Services[host]
	if !ok || lb.Image != "evershield/lb:local" {
		t.Fatalf("BRIDGE_PUBLIC_URL %q names service %q, want the load balancer of image evershield/lb:local", public, host)
	}
	if nets := networksOf(t, c, host); len(nets) != 1 || !slices.Contains(slices.Collect(maps.Keys(nets)), "front") {
		t.Errorf("service %s joins %v, want front only", host, slices.Sorted(maps.Keys(nets)))
	}
	for name, env := range bridges {
		backend := "http://" + name + env[envPrefix+"HTTP_ADDR"]
		if i := slices.Index(lb.Command, backend); i < 1 || lb.Command[i-1] != "-backend" {
			t.Errorf("service %s (command %q) does not forward to %s", host, lb.Command, backend)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// imageBinary is where the images put the bridge's binary.
const imageBinary = "/usr/local/bin/bridge"

// natsImage is the nats-server image scripts/images.sh builds and the compose file runs.
const natsImage = "evershield/nats:local"

// builtImages are the images scripts/images.sh builds with its default tag: evershield/NAME:local for
// each deploy/docker/Dockerfile.NAME it builds.
func builtImages(t *testing.T) []string {
	t.Helper()
	script, err := os.ReadFile(repoFile("scripts/images.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "tag=${TAG:-local}") || !strings.Contains(string(script), `"evershield/$1:$tag"`) {
		t.Fatal("scripts/images.sh no longer tags evershield/NAME:local by default")
	}
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^build ([a-z]+)$`).FindAllStringSubmatch(string(script), -1) {
		if _, err := os.Stat(repoFile("deploy/docker/Dockerfile." + m[1])); err != nil {
			t.Errorf("scripts/images.sh builds %s: %v", m[1], err)
		}
		out = append(out, "evershield/"+m[1]+":local")
	}
	if !slices.Contains(out, "evershield/bridge:local") || !slices.Contains(out, natsImage) {
		t.Fatalf("scripts/images.sh builds %q, want the bridge and %s", out, natsImage)
	}
	return out
}

// TestImageHealthcheck checks the bridge image's HEALTHCHECK: exec form (the image has no shell), the
// binary the image has, and a command bridge has.
func TestImageHealthcheck(t *testing.T) {
	b, err := os.ReadFile(repoFile("deploy/docker/Dockerfile.bridge"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	if !strings.Contains(df, "\nCOPY bridge "+imageBinary+"\n") || !strings.Contains(df, `ENTRYPOINT ["`+imageBinary+`"]`) {
		t.Fatalf("Dockerfile.bridge does not install the binary at %s", imageBinary)
	}
	m := regexp.MustCompile(`(?m)^HEALTHCHECK .* CMD \["([^"]+)", "([^"]+)"\]$`).FindStringSubmatch(df)
	if m == nil || m[1] != imageBinary || lookup(commands(), m[2]) != healthcheckCommand {
		t.Fatalf("Dockerfile.bridge HEALTHCHECK %q, want CMD [%q, \"healthcheck\"]", m, imageBinary)
	}
}

// TestDockerfilesNeedNoRegistry checks every Dockerfile of the repository against an engine with no
// registry and the legacy builder only (issue 26): every FROM is scratch or a stage of the same file,
// and nothing needs BuildKit (a syntax directive, RUN --mount, the BuildKit platform arguments).
func TestDockerfilesNeedNoRegistry(t *testing.T) {
	var files []string
	err := filepath.WalkDir(repoFile("."), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != repoFile(".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), "Dockerfile") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found Dockerfiles %q, want at least the bridge's and nats-server's", files)
	}
	from := regexp.MustCompile(`(?i)^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$`)
	buildkit := regexp.MustCompile(`(?i)^#\s*syntax\s*=|--mount=|\$\{?(BUILDPLATFORM|TARGETPLATFORM|TARGETOS|TARGETARCH)\b`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		stages := map[string]bool{}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if buildkit.MatchString(line) {
				t.Errorf("%s:%d: %q needs BuildKit; the legacy builder must do", f, i+1, line)
			}
			if !strings.HasPrefix(strings.ToUpper(line), "FROM") {
				continue
			}
			m := from.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("%s:%d: cannot read %q", f, i+1, line)
				continue
			}
			if m[1] != "scratch" && !stages[strings.ToLower(m[1])] {
				t.Errorf("%s:%d: FROM %s must be pulled from a registry; want scratch or a stage of this file", f, i+1, m[1])
			}
			if m[2] != "" {
				stages[strings.ToLower(m[2])] = true
			}
		}
	}
}

// TestDeployFilesNameDocumentedMetrics checks that every metric the dashboard and the alert rules use is
// in docs/METRICS.md, which is generated from the registry of a running bridge (the bridge package's
// TestMetricsDoc), so that every metric they use is one the bridge registers.
func TestDeployFilesNameDocumentedMetrics(t *testing.T) {
	doc, err := os.ReadFile(repoFile("docs/METRICS.md"))
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`\bbridge_[a-z_]+[a-z]`)
	documented := map[string]bool{}
	for _, m := range name.FindAllString(string(doc), -1) {
		documented[m] = true
	}
	base := func(m string) string {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			m = strings.TrimSuffix(m, suf)
		}
		return m
	}
	for _, f := range []string{"deploy/grafana/bridge.json", "deploy/prometheus/alerts.yml"} {
		b, err := os.ReadFile(repoFile(f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllString(string(b), -1) {
			if !documented[base(m)] {
				t.Errorf("%s uses %s, which docs/METRICS.md does not list", f, m)
			}
		}
	}
}

// TestComposeTopologySurvivesNodeAndBridgeLoss runs the shape of docker-compose.yml in-process: a
// 3-node JetStream cluster, two bridges with the compose services' environment (every role, reconcile
// on both), and the simulator. It submits jobs while one NATS node (the RESULTS leader) and then one
// bridge are stopped, and requires exactly one result for every accepted job.
func TestComposeTopologySurvivesNodeAndBridgeLoss(t *testing.T) {
	compose := bridgeServices(t, readCompose(t))
	// The bridges provision the cluster themselves.
	w := testworld.New(t, testworld.WithTopology(testworld.Cluster), testworld.WithoutProvision(),
		testworld.WithSimulator(simulator.Config{GrantChat: true, DropRate: 0.1, DuplicateRate: 0.1, Seed: 7}))
	cluster, sim := w.Nodes, w.Sim

	type proc struct {
		name string
		app  *bridge.App
		stop context.CancelFunc
		done chan error
		err  error
		once sync.Once
	}
	var procs []*proc
	for _, name := range []string{"bridge-1", "bridge-2"} {
		env, ok := compose[name]
		if !ok {
			t.Fatalf("docker-compose.yml has no service %s", name)
		}
		env = maps.Clone(env)
		// Addresses differ in-process; the rest is the compose file's. Polling is faster for the test.
		env[envPrefix+"NATS_URL"] = cluster.URLs()
		env[envPrefix+"HTTP_ADDR"] = "127.0.0.1:0"
		env[envPrefix+"PUBLIC_URL"] = ""
		env[envPrefix+"API_URL"] = sim.URL()
		env[envPrefix+"API_RPM"] = "60000"
		env[envPrefix+"POLL_INTERVAL"] = "500ms"
		env[envPrefix+"WEBHOOK_GRACE"] = "200ms"
		cfg, err := parseConfig(env)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("process", name).Logger()
		ctx, cancel := context.WithCancel(context.Background())
		a, err := bridge.New(ctx, cfg, log, bridge.WithPublicURLFromListener(), bridge.WithReconcileInstance(name))
		if err != nil {
			cancel()
			t.Fatalf("%s: %v", name, err)
		}
		p := &proc{name: name, app: a, stop: cancel, done: make(chan error, 1)}
		go func() { p.done <- a.Run(ctx) }()
		procs = append(procs, p)
	}
	// stopProc stops a bridge as SIGTERM does and waits for it.
	stopProc := func(p *proc) {
		p.once.Do(func() {
			p.stop()
			select {
			case p.err = <-p.done:
			case <-time.After(30 * time.Second):
				p.err = errors.New("did not stop within 30s")
			}
			if p.err != nil {
				t.Errorf("%s: %v", p.name, p.err)
			}
		})
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.stop()
		}
		for _, p := range procs {
			stopProc(p)
		}
	})

	nc, js := w.NC, w.JS
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	natstest.WaitFor(t, 20*time.Second, func() error { return waitForService(ctx, nc, 2*time.Second) })

	// Every result, counted per Nats-Msg-Id, by a consumer that survives the node loss.
	var mu sync.Mutex
	results := map[string]int{}
	cons, err := js.OrderedConsumer(ctx, contract.Default.StreamResults, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.Default.SubjectResults + ">"}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		results[m.Headers().Get(jetstream.MsgIDHeader)]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()

	var submitted []string
	var subMu sync.Mutex
	submit := func(n int) {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		for i := range n {
			g.Go(func() error {
				mods := contract.Modalities()
				m := mods[i%len(mods)]
				modality := m.Name
				fields := map[string]string{m.Field: fmt.Sprintf("https://example.com/%d", i)}
				if modality == "prompt" || modality == "chat" {
					fields = map[string]string{"prompt": fmt.Sprintf("compose test %d", i)}
				}
				key := uuid.NewString() // a retry after a lost reply returns the first job
				for {
					rctx, rcancel := context.WithTimeout(gctx, 5*time.Second)
					rep, _, err := ops.Submit(rctx, nc, ops.SubmitRequest{Modality: modality, Fields: fields, IdempotencyKey: key})
					rcancel()
					if err == nil {
						subMu.Lock()
						submitted = append(submitted, rep.JobID)
						subMu.Unlock()
						return nil
					}
					if gctx.Err() != nil {
						return fmt.Errorf("submit %s: %w", modality, err)
					}
					select { // NATS is electing a leader or the service is moving: try again
					case <-gctx.Done():
					case <-time.After(200 * time.Millisecond):
					}
				}
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
	}

	submit(20)
	// Stop the node leading RESULTS: its streams elect new leaders, clients reconnect elsewhere.
	info, err := js.Stream(ctx, contract.Default.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	leader := info.CachedInfo().Cluster.Leader
	for _, n := range cluster {
		if n.Name() == leader {
			t.Logf("stopping NATS node %s (RESULTS leader)", leader)
			n.Stop()
		}
	}
	submit(20)
	t.Logf("stopping %s", procs[1].name)
	stopProc(procs[1])
	submit(20)

	natstest.WaitFor(t, 60*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		missing := 0
		for _, id := range submitted {
			if results[id] == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d jobs have no result yet", missing, len(submitted))
		}
		return nil
	})
	mu.Lock()
	for _, id := range submitted {
		if results[id] != 1 {
			t.Errorf("job %s has %d results", id, results[id])
		}
	}
	for id, n := range results {
		if base, _, _ := strings.Cut(id, "."); !slices.Contains(submitted, base) {
			t.Errorf("result %s (%d) of a job nobody submitted", id, n)
		}
	}
	mu.Unlock()

	// The operator's view agrees: nothing pending.
	rep, err := ops.Status(ctx, ops.StatusConfig{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Jobs.ByState["pending"] != 0 || rep.Jobs.Scanned != len(submitted) {
		t.Errorf("status after the run: %+v", rep.Jobs)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("test ran out of time")
	}
}
