package crash_test

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ingest"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/upstream/simulator"
)

var soak = flag.Bool("soak", false, "run the long soak variants of the crash and fault scenarios")

// v2Secret is the webhook secret of the v2 scenarios' simulator, child and test webhooks.
const v2Secret = "whsec_Y3Jhc2gtc3VpdGUtdjItc2VjcmV0LTAxMjM0NTY3ODk="

// bin is the bridge binary built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "bridge-crash-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "bridge")
	build := exec.Command("go", "build", "-o", bin, "github.com/evershield/bridge/cmd/bridge")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build bridge: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pick returns the soak value under -soak, else the CI value.
func pick[T any](ci, long T) T {
	if *soak {
		return long
	}
	return ci
}

// child is one bridge process, restartable on the same HTTP address.
type child struct {
	tb testing.TB
	// bin is the binary to run; empty: the one TestMain built.
	bin    string
	env    []string
	addr   string
	dir    string
	starts int
	cmd    *exec.Cmd
	exited chan struct{}
	logs   []string
	// noService: the process runs no submit role, so start does not wait for the submit service.
	noService bool
	// service is the micro service start pings; empty: contract.Default's (a namespaced child sets its own).
	service string
}

// newChild prepares (does not start) a bridge process with vars on top of the common environment.
func newChild(tb testing.TB, vars map[string]string) *child {
	tb.Helper()
	c := &child{tb: tb, addr: freeAddr(tb), dir: tb.TempDir()}
	env := map[string]string{
		"PATH":              os.Getenv("PATH"),
		"BRIDGE_HTTP_ADDR":  c.addr,
		"BRIDGE_PUBLIC_URL": "http://" + c.addr,
		"BRIDGE_DATA_DIR":   filepath.Join(c.dir, "data"),
		"BRIDGE_LOG_LEVEL":  "info",
	}
	maps.Copy(env, vars)
	for _, k := range slices.Sorted(maps.Keys(env)) {
		c.env = append(c.env, k+"="+env[k])
	}
	tb.Cleanup(func() {
		c.kill()
		if tb.Failed() {
			for _, p := range c.logs {
				tb.Logf("--- tail of %s ---\n%s", filepath.Base(p), tail(p, 40))
			}
		}
	})
	return c
}

// URL is the base URL of the child's HTTP listener.
func (c *child) URL() string { return "http://" + c.addr }

// start starts the process and waits until /readyz answers 200 and the submit service answers a ping.
func (c *child) start(nc *nats.Conn) {
	c.tb.Helper()
	c.starts++
	logPath := filepath.Join(c.dir, fmt.Sprintf("bridge-%d.log", c.starts))
	f, err := os.Create(logPath)
	if err != nil {
		c.tb.Fatal(err)
	}
	c.logs = append(c.logs, logPath)
	cmd := exec.Command(cmp.Or(c.bin, bin), "run")
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		c.tb.Fatalf("start bridge: %v", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}(c.exited)
	hc := &http.Client{Timeout: time.Second}
	// Start-up connects, provisions and binds; the roles come up concurrently after that.
	natstest.WaitFor(c.tb, 60*time.Second, func() error {
		select {
		case <-c.exited:
			c.tb.Fatalf("bridge exited during start-up: %s\n%s", cmd.ProcessState, tail(logPath, 30))
		default:
		}
		resp, err := hc.Get(c.URL() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		if c.noService {
			return nil
		}
		_, err = nc.Request("$SRV.PING."+cmp.Or(c.service, contract.Default.ServiceName), nil, 500*time.Millisecond)
		return err
	})
}

// kill sends SIGKILL and waits for the process to be gone; it is a no-op when not running.
func (c *child) kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.exited
	c.cmd = nil
}

// stop sends SIGTERM and waits for a clean exit (bounded; a hang is a failure).
func (c *child) stop() {
	c.tb.Helper()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(45 * time.Second):
		c.tb.Errorf("bridge did not stop within 45s of SIGTERM")
	}
	c.kill()
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// rigConfig shapes one scenario's parts.
type rigConfig struct {
	// nodes is the NATS cluster size; 1 is a single node (R1), 3 a cluster with BRIDGE_REPLICAS=3.
	nodes int
	// sim configures the simulator; the zero value gets the suite's defaults (see newRig).
	sim *simulator.Config
	// env adds or overrides BRIDGE_* variables of the child.
	env map[string]string
	// contract is the simulator's contract, simulator.ContractV1 when empty. Under v2 the simulator signs
	// its webhooks with a secret the child and the test's own webhooks share, and retries them.
	api string
}

// rig is one scenario: NATS, the simulator, the bridge child, the test's own clients and the ledger.
type rig struct {
	t       *testing.T
	cluster natstest.Cluster
	sim     *simulator.Simulator
	nc      *nats.Conn
	js      jetstream.JetStream
	child   *child
	hc      *http.Client
	led     *ledger
	tally   *tally
	// secret signs the test's own webhooks under v2 (nil: unsigned).
	secret []byte
	// env is the child's BRIDGE_* environment, for more processes of the same deployment.
	env map[string]string
}

// eachContract runs scenario once against a simulator of each upstream contract: v1, and v2 (signed
// webhooks retried on failure, the bridge on BRIDGE_API_CONTRACT=auto). Parallel subtests unless the
// scenario measures rates and needs the machine to itself.
func eachContract(t *testing.T, parallel bool, scenario func(t *testing.T, api string)) {
	for _, c := range []string{simulator.ContractV1, simulator.ContractV2} {
		t.Run(c, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			scenario(t, c)
		})
	}
}

func newRig(t *testing.T, rc rigConfig) *rig {
	t.Helper()
	r := &rig{t: t, led: newLedger(), tally: newTally()}
	rc.nodes = max(rc.nodes, 1)
	simCfg := simulator.Config{
		Seed: 7, QueueDelay: 20 * time.Millisecond, ProcessDelay: 100 * time.Millisecond,
		DropRate: 0.1, DuplicateRate: 0.2, ProhibitedRate: 0.2, Log: zerolog.Nop(),
	}
	if rc.sim != nil {
		simCfg = *rc.sim
	}
	if rc.api == simulator.ContractV2 {
		simCfg.Contract, simCfg.WebhookSecret, simCfg.WebhookRetryScale = simulator.ContractV2, v2Secret, 0.01
		r.secret, _ = ingest.ParseSecret(v2Secret)
		rc.env = maps.Clone(rc.env)
		if rc.env == nil {
			rc.env = map[string]string{}
		}
		rc.env["BRIDGE_WEBHOOK_SECRET"] = v2Secret
	}
	// The bridge child provisions the streams and buckets itself.
	w := testworld.New(t, testworld.WithTopology(testworld.Topology{Name: "rig", Replicas: rc.nodes}), testworld.WithoutProvision(),
		testworld.WithSimulator(simCfg))
	r.cluster, r.sim, r.nc, r.js = w.Nodes, w.Sim, w.NC, w.JS
	env := map[string]string{
		"BRIDGE_NATS_URL": r.cluster.URLs(), "BRIDGE_REPLICAS": fmt.Sprint(rc.nodes),
		"BRIDGE_API_URL": r.sim.URL(), "BRIDGE_API_KEY": simulator.DefaultKey, "BRIDGE_API_RPM": "60000",
		"BRIDGE_POLL_INTERVAL": "1s", "BRIDGE_WEBHOOK_GRACE": "500ms",
		"BRIDGE_TIMEOUT_PROMPT": "5m", "BRIDGE_TIMEOUT_IMAGE": "5m", "BRIDGE_TIMEOUT_VIDEO": "5m", "BRIDGE_TIMEOUT_CHAT": "5m",
		"BRIDGE_DUPLICATE_WINDOW": "6m", "BRIDGE_RETENTION": "1h",
	}
	maps.Copy(env, rc.env)
	r.env = env
	r.child = newChild(t, env)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	r.hc = &http.Client{Transport: tr, Timeout: 10 * time.Second} // the upstream's webhook timeout
	return r
}

// startBridge starts (or restarts) the child and makes sure the results tally is consuming.
func (r *rig) startBridge() {
	r.t.Helper()
	r.child.start(r.nc)
	r.tally.follow(r.t, r.js)
}

// ledger records what the load did, and so which jobs must end with exactly one result.
type ledger struct {
	mu sync.Mutex
	// must maps a job to why it must have exactly one result.
	must map[string]string
	// real are the jobs the bridge accepted over moderate.*.
	real   []string
	forged map[string]bool
	// posts counts the test's own webhook POSTs by answer: a status code, or "transport".
	posts map[string]int
	ops   atomic.Int64
}

func newLedger() *ledger {
	return &ledger{must: map[string]string{}, forged: map[string]bool{}, posts: map[string]int{}}
}

func (l *ledger) mustHave(id, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.must[id]; !ok {
		l.must[id] = why
	}
}

func (l *ledger) addReal(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.real = append(l.real, id)
}

func (l *ledger) randomReal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.real) == 0 {
		return ""
	}
	return l.real[rand.IntN(len(l.real))]
}

func (l *ledger) post(answer string) {
	l.mu.Lock()
	l.posts[answer]++
	l.mu.Unlock()
}

// settle adds every simulator job whose webhook the bridge answered 2xx, including jobs the bridge
// submitted but whose reply the test never got (the process was killed in between).
func (l *ledger) settle(sim *simulator.Simulator) {
	for _, j := range sim.Jobs() {
		for _, w := range j.Webhooks {
			if w.Outcome == simulator.WebhookDelivered {
				l.mustHave(j.ID, "simulator webhook answered 2xx")
				break
			}
		}
	}
}

func (l *ledger) mustIDs() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.must)
}

// tally counts results as they arrive, from an ordered consumer on RESULTS.
type tally struct {
	mu      sync.Mutex
	primary map[string]int
	total   atomic.Int64
	cc      jetstream.ConsumeContext
}

func newTally() *tally { return &tally{primary: map[string]int{}} }

func (t *tally) follow(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	if t.cc != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, contract.Default.StreamResults, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.Default.SubjectResults + ">"}})
	if err != nil {
		tb.Fatalf("results consumer: %v", err)
	}
	t.cc, err = cons.Consume(func(m jetstream.Msg) {
		if strings.HasPrefix(m.Subject(), contract.Default.SubjectLateResults) {
			return
		}
		var r struct {
			JobID string `json:"job_id"`
		}
		_ = json.Unmarshal(m.Data(), &r)
		t.mu.Lock()
		t.primary[r.JobID]++
		t.mu.Unlock()
		t.total.Add(1)
	})
	if err != nil {
		tb.Fatalf("consume results: %v", err)
	}
	tb.Cleanup(t.cc.Stop)
}

func (t *tally) has(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.primary[id] > 0
}

// load is a steady stream of operations at a fixed period until stopped.
type load struct {
	stop chan struct{}
	done chan struct{}
}

// startLoad runs one operation every period, each in its own goroutine (at most 32 at once, so a slow
// answer does not slow the rate): submissions over moderate.* (the simulator then sends, drops or
// duplicates each job's webhook to the bridge), duplicate webhooks of known jobs posted by the test, and
// one forged webhook.
func (r *rig) startLoad(period time.Duration) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	go func() {
		defer close(l.done)
		defer wg.Wait()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // a full house skips a beat rather than queueing
			}
			wg.Go(func() {
				defer func() { <-sem }()
				r.op(i)
			})
		}
	}()
	return l
}

// halt stops the load and waits for its operations in flight.
func (l *load) halt() {
	close(l.stop)
	<-l.done
}

var modalities = []struct{ name, field, value string }{
	{"prompt", "prompt", "crash suite prompt"},
	{"image", "image_url", "https://example.com/crash.png"},
}

func (r *rig) op(i int) {
	r.led.ops.Add(1)
	m := modalities[i%len(modalities)]
	switch {
	case i%8 == 7:
		if id := r.led.randomReal(); id != "" {
			r.postWebhook(id, m.name, false)
		}
	case i == 1:
		// One forgery per load: the bridge verifies webhooks of jobs it does not know only within a small
		// budget (six a minute), so a stream of them would leave it busy long after the load.
		r.postWebhook(uuid.NewString(), m.name, true)
	default:
		r.submitViaBridge(m.name, m.field, m.value)
	}
}

// submitViaBridge submits over moderate.<m>; a job_id in the reply means the bridge owes a result. It
// returns the job_id, or "" when the submission was not accepted.
func (r *rig) submitViaBridge(modality, field, value string) string {
	return r.submitViaBridgeKeyed(modality, field, value, "")
}

// submitViaBridgeKeyed is submitViaBridge with the Idempotency-Key key (none when empty).
func (r *rig) submitViaBridgeKeyed(modality, field, value, key string) string {
	m := nats.NewMsg(contract.Default.SubjectSubmit + modality)
	m.Data, _ = json.Marshal(map[string]string{field: value})
	if key != "" {
		m.Header.Set(contract.HeaderIdempotencyKey, key)
	}
	msg, err := r.nc.RequestMsg(m, 15*time.Second)
	if err != nil || msg.Header.Get(micro.ErrorCodeHeader) != "" {
		return ""
	}
	var rep struct {
		JobID  string `json:"job_id"`
		Status string `json:"status"`
	}
	if json.Unmarshal(msg.Data, &rep) != nil || rep.JobID == "" {
		return ""
	}
	r.led.addReal(rep.JobID)
	r.led.mustHave(rep.JobID, "accepted over moderate."+modality)
	return rep.JobID
}

// postWebhook posts a webhook for id as the upstream would; a 2xx for a real job means the bridge owes
// its result, and a forged one must never become a result.
func (r *rig) postWebhook(id, modality string, forged bool) int {
	if forged {
		r.led.mu.Lock()
		r.led.forged[id] = true
		r.led.mu.Unlock()
	}
	body := fmt.Sprintf(`{"job_id":%q,"type":%q,"status":"completed","is_prohibited":false,"categories":{"custom":{}}}`, id, modality)
	resp, err := r.hc.Do(r.webhookRequest(id, modality, body))
	if err != nil {
		r.led.post("transport")
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	r.led.post(fmt.Sprint(resp.StatusCode))
	if resp.StatusCode/100 == 2 && !forged {
		r.led.mustHave(id, "test webhook answered 2xx")
	}
	return resp.StatusCode
}

// webhookRequest is a webhook for id with body as the upstream sends it: signed under v2 (a forgery
// with the right secret is still found out by verification).
func (r *rig) webhookRequest(id, modality, body string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, r.child.URL()+"/webhook/"+modality, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if r.secret != nil {
		msgID, ts := "msg_"+id, fmt.Sprint(time.Now().Unix())
		req.Header.Set(ingest.HeaderWebhookID, msgID)
		req.Header.Set(ingest.HeaderWebhookTimestamp, ts)
		req.Header.Set(ingest.HeaderWebhookSignature, ingest.Sign(r.secret, msgID, ts, []byte(body)))
	}
	return req
}

// waitOps waits until the load has started n more operations than when called.
func (r *rig) waitOps(n int64, bound time.Duration) {
	r.t.Helper()
	target := r.led.ops.Load() + n
	natstest.WaitFor(r.t, bound, func() error {
		if got := r.led.ops.Load(); got < target {
			return fmt.Errorf("%d of %d operations", got, target)
		}
		return nil
	})
}

// waitResults waits until n more results than when called have arrived.
func (r *rig) waitResults(n int64, bound time.Duration) {
	r.t.Helper()
	target := r.tally.total.Load() + n
	natstest.WaitFor(r.t, bound, func() error {
		if got := r.tally.total.Load(); got < target {
			return fmt.Errorf("%d of %d results", got, target)
		}
		return nil
	})
}

// waitSettled waits, within bound, until every job the bridge owes has a result and the bridge is idle:
// the verify consumer has nothing pending, and no JOBS record is pending.
func (r *rig) waitSettled(bound time.Duration) {
	r.t.Helper()
	r.led.settle(r.sim)
	must := r.led.mustIDs()
	deadline := time.Now().Add(bound)
	natstest.WaitFor(r.t, bound, func() error {
		missing := 0
		var example string
		for id := range must {
			if !r.tally.has(id) {
				missing++
				example = id
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d owed results missing (e.g. %s: %s)", missing, len(must), example, must[example])
		}
		return nil
	})
	natstest.WaitFor(r.t, max(time.Until(deadline), 5*time.Second), func() error { return r.idle() })
}

// idle reports why the bridge still has work: webhooks not yet verified or JOBS records still pending.
func (r *rig) idle() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := r.js.Consumer(ctx, contract.Default.StreamWebhooks, contract.Default.ConsumerVerify)
	if err != nil {
		return err
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	if ci.NumPending > 0 {
		return fmt.Errorf("verify consumer: %d pending", ci.NumPending)
	}
	recs, err := r.jobRecords(ctx)
	if err != nil {
		return err
	}
	for id, rec := range recs {
		if rec.State == jobs.StatePending {
			return fmt.Errorf("JOBS %s still pending (attempts %d, last error %q; %d webhooks unacknowledged)",
				id, rec.Attempts, rec.LastError, ci.NumAckPending)
		}
	}
	// Unacknowledged webhooks may remain: after a long outage a webhook waits out its backoff (up to the
	// verifier's RetryMax, minutes) even though polling already delivered its job. Every job being settled,
	// its redelivery finds the result out and is acked without an upstream call.
	if ci.NumAckPending > 0 {
		r.t.Logf("verify consumer: %d webhooks still waiting out their backoff; every job is settled", ci.NumAckPending)
	}
	return nil
}

// jobRecords reads every JOBS record.
func (r *rig) jobRecords(ctx context.Context) (map[string]jobs.Record, error) {
	kv, err := r.js.KeyValue(ctx, contract.Default.BucketJobs)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop() //nolint:errcheck
	out := map[string]jobs.Record{}
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return out, nil
			}
			var rec jobs.Record
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return nil, fmt.Errorf("JOBS %s: %w", e.Key(), err)
			}
			out[e.Key()] = rec
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// verdict is what checkExactlyOnce found.
type verdict struct {
	owed, results, late int
	bySource            map[string]int
}

// checkExactlyOnce reads RESULTS from the start and fails the test for every owed job without exactly
// one result, every job with more than one (primary or late), and every forged id with any.
func (r *rig) checkExactlyOnce() verdict {
	r.t.Helper()
	primary, late := map[string]int{}, map[string]int{}
	v := verdict{bySource: map[string]int{}}
	for _, m := range natstest.StreamMsgs(r.t, r.js, contract.Default.StreamResults) {
		var body struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal(m.Data, &body); err != nil || body.JobID == "" {
			r.t.Errorf("result on %s without a job_id: %.200s", m.Subject, m.Data)
			continue
		}
		if strings.HasPrefix(m.Subject, contract.Default.SubjectLateResults) {
			late[body.JobID]++
			v.late++
			continue
		}
		primary[body.JobID]++
		v.results++
		v.bySource[m.Header.Get(contract.HeaderBridgeSource)]++
	}
	must := r.led.mustIDs()
	v.owed = len(must)
	lost, doubled := 0, 0
	for id, why := range must {
		if primary[id] == 0 {
			lost++
			if lost <= 5 {
				r.t.Errorf("lost: job %s (%s) has no result", id, why)
			}
		}
	}
	for id, n := range primary {
		if n > 1 || late[id] > 1 {
			doubled++
			if doubled <= 5 {
				r.t.Errorf("doubled: job %s has %d results and %d late results", id, n, late[id])
			}
		}
	}
	r.led.mu.Lock()
	for id := range r.led.forged {
		if primary[id] > 0 || late[id] > 0 {
			r.t.Errorf("forged webhook %s became a result", id)
		}
	}
	posts := maps.Clone(r.led.posts)
	r.led.mu.Unlock()
	if lost > 0 || doubled > 0 {
		r.t.Errorf("%d lost, %d doubled of %d owed jobs", lost, doubled, len(must))
	}
	st := r.sim.Stats()
	r.t.Logf("owed %d, results %d (by source %v), late %d; test webhook answers %v; simulator webhooks %+v, calls %v",
		v.owed, v.results, v.bySource, v.late, posts, st.Webhooks, st.Calls)
	return v
}

// apiCalls is the number of upstream API calls the simulator answered (health checks aside).
func apiCalls(sim *simulator.Simulator) int {
	n := 0
	for ep, c := range sim.Stats().Calls {
		if ep != simulator.EndpointHealth {
			n += c
		}
	}
	return n
}
