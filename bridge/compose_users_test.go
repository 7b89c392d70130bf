package bridge

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/evershield/bridge/access"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream/simulator"
)

// composeUsersOf parses deploy/docker/nats-users.conf with nats-server's own parser, the passwords of its
// users ($NATS_*_PASSWORD, which docker-compose fills from .env) set to the roles tests' (password),
// and returns its users by name.
func composeUsersOf(t *testing.T) map[string]*server.User {
	t.Helper()
	for user, env := range map[string]string{"bridge": "NATS_BRIDGE_PASSWORD", "ops": "NATS_OPS_PASSWORD",
		"downstream": "NATS_DOWNSTREAM_PASSWORD"} {
		t.Setenv(env, password(user))
	}
	opts, err := server.ProcessConfigFile("../deploy/docker/nats-users.conf")
	if err != nil {
		t.Fatalf("nats-server does not take deploy/docker/nats-users.conf: %v", err)
	}
	if opts.NoAuthUser != "" || len(opts.Nkeys) != 0 || len(opts.Users) != 3 {
		t.Fatalf("nats-users.conf: no_auth_user %q, %d nkeys, %d users; want no anonymous user and 3 users",
			opts.NoAuthUser, len(opts.Nkeys), len(opts.Users))
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	for _, name := range []string{"bridge", "ops", "downstream"} {
		if u := users[name]; u == nil || u.Password != password(name) || u.Permissions == nil {
			t.Fatalf("nats-users.conf: user %s is %+v, want one with its password from the environment and permissions", name, u)
		}
	}
	return users
}

// TestComposeUsersRunTheBridgeOnCluster is the compose deployment's authorization on the 3-node cluster:
// its users as nats-server parses them from deploy/docker/nats-users.conf, and nothing else but an
// administrator who only reads. One bridge process with every role, as the compose bridge user,
// provisions the streams and buckets at start; a downstream service, as the compose downstream user,
// submits a job and reads its verified result; a forged webhook ends as a dead letter; the operator, as
// the compose ops user, runs the operator's commands. Not one permission violation on any connection.
func TestComposeUsersRunTheBridgeOnCluster(t *testing.T) {
	users := composeUsersOf(t)
	e := testworld.New(t, testworld.WithTopology(testworld.Cluster), testworld.WithoutProvision(),
		testworld.WithSimulator(simulator.Config{}), testworld.WithUsers(&server.User{Username: adminUser,
			Password: password(adminUser)}, users["bridge"], users["ops"], users["downstream"]))
	// startRoleProcess signs in as the user named after the role: here the compose bridge user, every
	// role, and provisioning at start as the compose bridges do. The reconciler waits a minute for a
	// webhook before it polls, and the job's deadline is a minute away: the result comes from the
	// webhook, however slow the machine (with the roles tests' 2 s deadline, a CI machine running the
	// race suite beside the compose cluster once delivered it by the deadline's poll).
	bridge := startRoleProcess(t, e, access.Role("bridge"), func(c *Config) {
		c.Roles, c.Provision, c.WebhookGrace = allRoles[:], Provisioning{}, time.Minute
		c.TimeoutPrompt, c.DuplicateWindow = time.Minute, 2*time.Minute
	}, WithPublicURLFromListener())

	down := newDownstreamClient(t, e)
	id := down.submit(t, "prompt", map[string]string{"prompt": "a cat on a mat"})
	down.readResult(t, id)
	if w := e.Sim.Webhooks(id); len(w) != 1 || w[0].Outcome == simulator.WebhookDropped {
		t.Errorf("webhooks of the job: %+v, want one delivered", w)
	}
	results := e.StreamMsgs(contract.Default.StreamResults, "results.prompt")
	if len(results) != 1 || results[0].Header.Get(contract.HeaderBridgeSource) != "webhook" {
		t.Fatalf("RESULTS on results.prompt: %d messages, want one from the webhook", len(results))
	}
	forged := postForgedWebhook(t, bridge.PublicURL())
	wantDeadLetter(t, e, forged)
	runOpsCommands(t, e, id, forged)
}
