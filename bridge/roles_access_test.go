package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/access"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/ingesttest"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream/simulator"
)

// adminUser may do everything: the administrator of the test cluster, who reads what the tests check.
const adminUser = "admin"

// processRoles are the bridge's process roles, each run as its own process under its own user.
var processRoles = []access.Role{access.Ingest, access.Verify, access.Submit, access.Reconcile}

// password is the test password of the user of role (or of the administrator).
func password(user string) string { return "pw-" + user }

// roleUsers are the administrator, first, then one user per process role, the provision role and the
// clients' roles (downstream, ops), each with exactly the role's permissions (access.For).
func roleUsers(names contract.Names) []*server.User {
	users := []*server.User{{Username: adminUser, Password: password(adminUser)}}
	for _, r := range append(processRoles[:len(processRoles):len(processRoles)], access.Provision, access.Downstream, access.Ops) {
		users = append(users, &server.User{Username: string(r), Password: password(string(r)),
			Permissions: natsx.ServerPermissions(access.For(r, names))})
	}
	return users
}

// asUser is urls (comma-separated nats:// URLs) with user's name and password in each.
func asUser(urls, user string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		parts[i] = strings.Replace(u, "nats://", "nats://"+user+":"+password(user)+"@", 1)
	}
	return strings.Join(parts, ",")
}

// violationLog keeps the log lines that report a NATS permission violation: the bridge logs every
// asynchronous error of its connection, and the server reports each violation to the client.
type violationLog struct {
	// mu guards lines.
	mu    sync.Mutex
	lines []string
}

func (v *violationLog) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("Permissions Violation")) {
		v.mu.Lock()
		v.lines = append(v.lines, string(p))
		v.mu.Unlock()
	}
	return len(p), nil
}

func (v *violationLog) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.lines...)
}

// startRoleProcess runs a bridge process with the one role, as that role's user, on e's cluster, which an
// administrator provisioned (BRIDGE_PROVISION=false), until the test ends; mod adjusts its configuration.
// Each permission violation its connection meets fails the test.
func startRoleProcess(t *testing.T, e *testworld.World, role access.Role, mod func(*Config), opts ...Option) *App {
	t.Helper()
	cfg := Config{NATSURL: asUser(e.URLs, string(role)), HTTPAddr: "127.0.0.1:0", APIURL: e.Sim.URL(),
		APIKey: simulator.DefaultKey, APIRPM: 6000, Roles: []string{string(role)}, Provision: CheckOnly, Replicas: 3,
		MaxBody: 64 << 10, Retention: time.Hour, LogLevel: "info", LogFormat: "json"}
	rolesTestTimings(&cfg)
	if mod != nil {
		mod(&cfg)
	}
	v := &violationLog{}
	// Registered before the App's, so it runs after the App stopped: a violation while draining counts too,
	// and so does one that made the test fail early.
	t.Cleanup(func() {
		for _, line := range v.all() {
			t.Errorf("the %s process met a permission violation: %s", role, line)
		}
	})
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), v)).With().Str("process", string(role)).Logger()
	a := startApp(t, cfg, log, append([]Option{WithReconcileInstance(string(role))}, opts...)...)
	waitReady(t, "http://"+a.Addr().String())
	return a
}

// rolesTestTimings are the roles test's: deadlines of 2 s, polls every 200 ms, a webhook grace of 300 ms and
// a duplicate window of 3 s, so that a missed webhook is polled and a delivered job compacted within
// seconds.
func rolesTestTimings(cfg *Config) {
	cfg.TimeoutPrompt, cfg.TimeoutImage, cfg.TimeoutVideo, cfg.TimeoutChat = 2*time.Second, 2*time.Second, 2*time.Second, 2*time.Second
	cfg.PollInterval, cfg.WebhookGrace, cfg.DuplicateWindow = 200*time.Millisecond, 300*time.Millisecond, 3*time.Second
}

// rolesWorld is a 3-node cluster with the role users on every node, the simulator, and the streams and
// buckets made by the provision user (natsx.Provision, R3) with the processes' configuration; the world
// reads them as the administrator. A permission violation of the provision user fails the test.
func rolesWorld(t *testing.T) *testworld.World {
	t.Helper()
	e := testworld.New(t, testworld.WithTopology(testworld.Cluster), testworld.WithoutProvision(),
		testworld.WithSimulator(simulator.Config{}), testworld.WithUsers(roleUsers(contract.Default)...))
	cfg := Config{MaxBody: 64 << 10, Retention: time.Hour, Replicas: 3}
	rolesTestTimings(&cfg)
	pc := cfg.ProvisionConfig()
	prov := make(chan error, 16)
	t.Cleanup(func() {
		select {
		case err := <-prov:
			t.Errorf("the provision user met a permission violation: %v", err)
		default:
		}
	})
	_, pjs := natstest.Connect(t, e.URLs, nats.UserInfo(string(access.Provision), password(string(access.Provision))),
		violations{prov}.option())
	if _, err := natsx.Provision(natstest.CtxWithin(t, 60*time.Second), pjs, pc); err != nil {
		t.Fatalf("provision as the provision user: %v", err)
	}
	res, err := natsx.Check(natstest.CtxWithin(t, 30*time.Second), e.JS, pc)
	if err != nil {
		t.Fatalf("check as the administrator: %v", err)
	}
	e.Res, e.Store = res, jobs.NewStore(res.Jobs)
	return e
}

// TestRolesRunUnderLeastPrivilegeOnCluster runs the bridge as four processes on the 3-node cluster, one
// role each, each as its role's user with exactly the permissions docs/SECURITY.md lists (access.For),
// after the provision user made the streams and buckets: a submission's webhook comes through ingest and
// its verified result goes out once; a job whose webhook the upstream never sends is polled by the
// reconciler; a forged webhook ends as a dead letter; jobs.status answers; delivered jobs are compacted,
// the first one's Idempotency-Key with it, so that BRIDGE_IDEMPOTENCY keeps no subject.
// The clients run beside them under their roles too: a downstream service submits (with an
// Idempotency-Key), and reads its result on results.>, through an ordered and a durable consumer
// (acknowledged) and over jobs.status; the operator runs what bridge status, job, deadletter list and
// redrive, replay (and -reverify), upgrade status and finalize and provision -check do. Not one permission violation on any
// connection: a permission the code needs and the role lacks fails.
func TestRolesRunUnderLeastPrivilegeOnCluster(t *testing.T) {
	e := rolesWorld(t)
	ingest := startRoleProcess(t, e, access.Ingest, nil, WithPublicURLFromListener())
	ingestURL := ingest.PublicURL()
	withURL := func(c *Config) { c.PublicURL = ingestURL } // every process of a deployment agrees on it
	procs := []*App{ingest, startRoleProcess(t, e, access.Verify, withURL), startRoleProcess(t, e, access.Reconcile, withURL),
		startRoleProcess(t, e, access.Submit, withURL)}

	results, err := e.NC.SubscribeSync(contract.Default.SubjectResults + ">")
	if err != nil {
		t.Fatal(err)
	}
	// A downstream service's submission (with an Idempotency-Key) whose webhook comes to ingest, and one
	// whose webhook the upstream drops.
	down := newDownstreamClient(t, e)
	byWebhook := submitKeyed(t, down.nc, "a cat on a mat", "cat-key")
	byPoll := e.Submit("prompt", map[string]string{"prompt": "sim:drop a dog on a log"}).JobID
	for range 2 {
		m, err := results.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("results.>: %v", err)
		}
		id, _ := jobIDOf(m.Data)
		want := map[string]string{byWebhook: contract.SourceWebhook, byPoll: contract.SourcePoll}[id]
		if m.Subject != "results.prompt" || m.Header.Get(contract.HeaderBridgeSource) != want {
			t.Errorf("result of %s on %s from %q, want results.prompt from %q", id, m.Subject, m.Header.Get(contract.HeaderBridgeSource), want)
		}
	}
	if w := e.Sim.Webhooks(byPoll); len(w) != 1 || w[0].Outcome != simulator.WebhookDropped {
		t.Errorf("webhooks of the dropped job: %+v, want one dropped", w)
	}
	down.readResult(t, byWebhook)
	forged := postForgedWebhook(t, ingestURL)
	wantDeadLetter(t, e, forged)
	wantJobStatus(t, e, byWebhook)
	// The reconciler compacts both delivered jobs: their JOBS keys and result fences go.
	waitHotState(t, e, 0, 0, 30*time.Second)
	wantOneResultEach(t, e, byWebhook, byPoll)
	if n := streamSubjects(t, natstest.CtxWithin(t, 10*time.Second), e)[contract.KVStream(contract.Default.BucketIdempotency)]; n != 0 {
		t.Errorf("%d subjects in BRIDGE_IDEMPOTENCY once both jobs are compacted, want 0 (the intents and the key purged)", n)
	}
	for _, a := range procs { // the lag and state collectors read the streams when scraped
		if st := ingesttest.Status("http://" + a.Addr().String() + "/metrics"); st != http.StatusOK {
			t.Errorf("/metrics: %d", st)
		}
	}
	runOpsCommands(t, e, byWebhook, forged)
}

// postForgedWebhook posts a webhook of a job the upstream never had to ingest at base, and returns its id.
func postForgedWebhook(t *testing.T, base string) string {
	t.Helper()
	id := uuid.NewString()
	resp, err := http.Post(base+"/webhook/prompt", "application/json", bytes.NewReader(testworld.WebhookBody(id, false)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("forged webhook: %d, want 200 (stored for verification)", resp.StatusCode)
	}
	return id
}

// wantDeadLetter waits until the webhook of job id is a dead letter.
func wantDeadLetter(t *testing.T, e *testworld.World, id string) {
	t.Helper()
	natstest.WaitFor(t, 30*time.Second, func() error {
		for _, m := range e.StreamMsgs(contract.Default.StreamDeadLetter, "") {
			if got, _ := jobIDOf(m.Data); got == id {
				return nil
			}
		}
		return fmt.Errorf("no dead letter of the forged webhook of %s", id)
	})
}

// wantJobStatus asks jobs.status about id and wants its delivered record.
func wantJobStatus(t *testing.T, e *testworld.World, id string) {
	t.Helper()
	reply := e.Request(contract.Default.SubjectJobStatus, []byte(`{"job_id":"`+id+`"}`), nil)
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("jobs.status: error %s %s", code, reply.Header.Get(micro.ErrorHeader))
	}
	var v struct {
		Job    *jobs.Record    `json:"job"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(reply.Data, &v); err != nil || v.Job == nil || v.Job.JobID != id || v.Job.State != jobs.StateDelivered ||
		len(v.Result) == 0 {
		t.Fatalf("jobs.status of %s: %s (%v), want its delivered record", id, reply.Data, err)
	}
}

// overstep is something a role's user must not do: publish to subject (a JetStream publish, or a request
// to the JetStream API, that the server would answer), or with sub, subscribe to it.
type overstep struct {
	role    access.Role
	subject string
	sub     bool
}

// TestRoleUsersCannotOverstep: each of the bridge's role users is refused what its role's code never
// does, and above all what would let it forge or destroy: only verify and reconcile write results, only
// ingest writes webhooks, no role deletes a stream. The server reports each refusal, naming the subject,
// and stores nothing. Widening any of these permissions fails its case.
func TestRoleUsersCannotOverstep(t *testing.T) {
	e := testworld.New(t, testworld.WithUsers(roleUsers(contract.Default)...))
	const id = "7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f"
	n := contract.Default
	api := func(op, rest string) string { return "$JS.API." + op + "." + rest }
	cases := []overstep{
		{access.Ingest, n.ResultSubject("prompt"), false},
		{access.Ingest, n.ResultFenceSubject(id, false), false},
		{access.Ingest, contract.KVSubject(n.BucketJobs, id), false},
		{access.Ingest, api("DIRECT.GET", contract.KVStream(n.BucketJobs)+"."+contract.KVSubject(n.BucketJobs, id)), false},
		{access.Ingest, api("CONSUMER.CREATE", n.StreamWebhooks+".spy"), false},
		{access.Ingest, api("STREAM.DELETE", n.StreamWebhooks), false},
		{access.Verify, n.WebhookSubject("prompt"), false},
		{access.Verify, contract.KVSubject(n.BucketIdempotency, "key"), false},
		{access.Verify, api("STREAM.PURGE", n.StreamResults), false},
		{access.Verify, api("STREAM.DELETE", n.StreamResults), false},
		{access.Verify, n.SubjectSubmit + ">", true},
		{access.Submit, n.ResultSubject("prompt"), false},
		{access.Submit, n.ResultFenceSubject(id, false), false},
		{access.Submit, n.WebhookSubject("prompt"), false},
		{access.Submit, n.DeadLetterSubject("not_found"), false},
		{access.Submit, api("CONSUMER.CREATE", n.StreamWebhooks+"."+n.ConsumerVerify), false},
		{access.Submit, api("STREAM.DELETE", contract.KVStream(n.BucketJobs)), false},
		{access.Submit, n.SubjectWebhooks + ">", true},
		{access.Reconcile, n.WebhookSubject("prompt"), false},
		{access.Reconcile, contract.KVSubject(n.BucketIdempotency, "key"), false},
		{access.Reconcile, api("STREAM.DELETE", n.StreamResults), false},
		{access.Provision, n.ResultSubject("prompt"), false},
		{access.Provision, contract.KVSubject(n.BucketJobs, id), false},
		{access.Provision, api("STREAM.MSG.GET", contract.KVStream(n.BucketJobs)), false},
		{access.Provision, api("STREAM.DELETE", n.StreamWebhooks), false},
	}
	conns := map[access.Role]*nats.Conn{}
	refusals := map[access.Role]chan error{}
	for _, c := range cases {
		if conns[c.role] == nil {
			refusals[c.role] = make(chan error, 16)
			conns[c.role], _ = natstest.Connect(t, e.URLs, nats.UserInfo(string(c.role), password(string(c.role))),
				violations{refusals[c.role]}.option())
		}
		t.Run(fmt.Sprintf("%s %s", c.role, c.subject), func(t *testing.T) {
			wantRefused(t, conns[c.role], refusals[c.role], c)
		})
	}
	for _, s := range []string{n.StreamWebhooks, n.StreamResults} {
		if msgs := e.StreamMsgs(s, ""); len(msgs) != 0 {
			t.Errorf("%s holds %d messages, want none", s, len(msgs))
		}
	}
	if _, err := natsx.Check(natstest.CtxWithin(t, 30*time.Second), e.JS, natsx.ProvisionConfig{}); err != nil {
		t.Errorf("streams and buckets after the attempts: %v", err)
	}
}

// wantRefused does c on nc and wants the server to refuse it, naming the subject.
func wantRefused(t *testing.T, nc *nats.Conn, refused chan error, c overstep) {
	t.Helper()
	var err error
	if c.sub {
		_, err = nc.SubscribeSync(c.subject)
	} else {
		err = nc.PublishRequest(c.subject, nats.NewInbox(), []byte(`{}`))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	got := natstest.RecvWithin(t, refused, 5*time.Second)
	if !strings.Contains(got.Error(), `"`+c.subject+`"`) {
		t.Errorf("refusal %v, want one naming %q", got, c.subject)
	}
}

// TestOpsUserOfANamespaceCannotTouchAnothers: on an account that namespaces share, the ops user of
// namespace staging reaches its own namespace's streams (asked about one, the server answers that it is
// not there) but not the default namespace's: it cannot delete, purge or update any of its streams and
// buckets, publish to its results, fences or webhooks, nor read its JOBS or WEBHOOKS. Each is refused
// with a permissions violation naming the subject, and nothing is stored or lost.
func TestOpsUserOfANamespaceCannotTouchAnothers(t *testing.T) {
	staging, err := contract.NamesFor("staging")
	if err != nil {
		t.Fatal(err)
	}
	const user = "staging-ops"
	e := testworld.New(t, testworld.WithUsers(&server.User{Username: adminUser, Password: password(adminUser)},
		&server.User{Username: user, Password: password(user), Permissions: natsx.ServerPermissions(access.For(access.Ops, staging))}))
	v := violations{make(chan error, 16)}
	nc, js := natstest.Connect(t, e.URLs, nats.UserInfo(user, password(user)), v.option())
	ctx := natstest.Ctx(t)
	if _, err := js.Stream(ctx, staging.StreamWebhooks); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("staging's ops user asks about %s: %v, want it answered as not found", staging.StreamWebhooks, err)
	}
	for _, store := range stores {
		for _, op := range []string{"STREAM.DELETE", "STREAM.PURGE", "STREAM.UPDATE"} {
			subj := "$JS.API." + op + "." + store
			wantDenied(t, v, op+" "+store, subj, apiRequest(nc, subj))
		}
	}
	n := contract.Default
	wantForgeryDenied(t, v, js, []string{n.ResultSubject("prompt"), n.ResultFenceSubject(forgedID, false), n.WebhookSubject("prompt")})
	wantDenied(t, v, "open JOBS", "$JS.API.STREAM.INFO.KV_JOBS", func(ctx context.Context) error {
		_, err := js.KeyValue(ctx, n.BucketJobs)
		return err
	})
	get := "$JS.API.DIRECT.GET.KV_JOBS." + contract.KVSubject(n.BucketJobs, forgedID)
	wantDenied(t, v, "get a job", get, apiRequest(nc, get))
	wantDenied(t, v, "read WEBHOOKS through a consumer", "$JS.API.CONSUMER.CREATE.WEBHOOKS.", func(ctx context.Context) error {
		_, err := js.OrderedConsumer(ctx, n.StreamWebhooks, jetstream.OrderedConsumerConfig{})
		return err
	})
	for _, s := range []string{n.StreamWebhooks, n.StreamResults} {
		if msgs := e.StreamMsgs(s, ""); len(msgs) != 0 {
			t.Errorf("%s holds %d messages, want none", s, len(msgs))
		}
	}
	if _, err := natsx.Check(natstest.CtxWithin(t, 30*time.Second), e.JS, natsx.ProvisionConfig{}); err != nil {
		t.Errorf("streams and buckets after the attempts: %v", err)
	}
}
