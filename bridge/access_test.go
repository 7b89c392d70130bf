package bridge

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/natsx"
)

// embeddedConfig is a whole Config for the embedded default on a random loopback port, every role.
func embeddedConfig(tb testing.TB) Config {
	cfg := testConfig(tb)
	cfg.NATSURL, cfg.NATSListen, cfg.DataDir = "", "127.0.0.1:-1", tb.TempDir()
	return cfg
}

// opsUser authenticates as the ops user of the embedded server of cfg, which may read what the bridge
// keeps: for tests that look into WEBHOOKS or JOBS.
func opsUser(tb testing.TB, cfg Config) nats.Option {
	tb.Helper()
	opt, err := natsx.OpsIdentity(filepath.Join(cfg.DataDir, natsx.OpsSeedFile))
	if err != nil {
		tb.Fatal(err)
	}
	return opt
}

// violations collects a connection's permission errors.
type violations struct{ ch chan error }

func (v violations) option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
			select {
			case v.ch <- err:
			default:
			}
		}
	})
}

// TestAnonymousClientsAreDownstreamOnly is the embedded default on a loopback listener, as the README runs
// it: a client without credentials submits a job, asks jobs.status, reads results on results.> and
// through a consumer of RESULTS; but it cannot write a result, a webhook or a job, nor read WEBHOOKS or
// JOBS, nor delete or purge any stream or bucket. Each is refused with a permissions violation naming the
// subject, and nothing forged is stored. Only the bridge writes results.
func TestAnonymousClientsAreDownstreamOnly(t *testing.T) {
	cfg := embeddedConfig(t)
	a := startApp(t, cfg, zerolog.Nop(), WithPublicURLFromListener())
	waitReady(t, "http://"+a.Addr().String())
	v := violations{make(chan error, 16)}
	nc, err := nats.Connect(a.Server().ClientURL(), v.option())
	if err != nil {
		t.Fatalf("anonymous connect on loopback: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := natstest.Ctx(t)

	// What a downstream service does.
	results, err := nc.SubscribeSync(contract.Default.SubjectResults + ">")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"hello"}`), 10*time.Second)
	if err != nil || msg.Header.Get("Nats-Service-Error-Code") != "" {
		t.Fatalf("moderate.prompt: %v %v", err, msg)
	}
	if _, err := results.NextMsg(30 * time.Second); err != nil {
		t.Fatalf("no result on results.>: %v", err)
	}
	cons, err := js.OrderedConsumer(ctx, contract.Default.StreamResults, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contract.Default.SubjectResults + ">"}})
	if err != nil {
		t.Fatalf("consumer of RESULTS: %v", err)
	}
	if _, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil {
		t.Fatalf("read RESULTS: %v", err)
	}
	if _, err := nc.Request(contract.Default.SubjectJobStatus, []byte(`{"job_id":"`+forgedID+`"}`), 10*time.Second); err != nil {
		t.Fatalf("jobs.status: %v", err)
	}
	select {
	case err := <-v.ch:
		t.Fatalf("downstream work met a permission violation: %v", err)
	default:
	}

	// What it must not do. Each refusal comes as a permissions violation naming the subject.
	wantForgeryDenied(t, v, js, []string{"results.prompt", "bridge.result." + forgedID, "webhooks.prompt", "$KV.JOBS." + forgedID})
	wantRemovalDenied(t, v, nc, stores)
	wantDenied(t, v, "read WEBHOOKS through a consumer", "$JS.API.CONSUMER.CREATE.WEBHOOKS.", func(ctx context.Context) error {
		_, err := js.OrderedConsumer(ctx, "WEBHOOKS", jetstream.OrderedConsumerConfig{})
		return err
	})
	wantDenied(t, v, "get a message of WEBHOOKS", "$JS.API.STREAM.MSG.GET.WEBHOOKS", apiRequest(nc, "$JS.API.STREAM.MSG.GET.WEBHOOKS"))
	wantDenied(t, v, "subscribe to webhooks.>", "webhooks.>", subscribeUntilRefused(nc, "webhooks.>"))
	wantDenied(t, v, "open JOBS", "$JS.API.STREAM.INFO.KV_JOBS", func(ctx context.Context) error {
		_, err := js.KeyValue(ctx, "JOBS")
		return err
	})
	wantDenied(t, v, "get a job", "$JS.API.DIRECT.GET.KV_JOBS.$KV.JOBS."+forgedID,
		apiRequest(nc, "$JS.API.DIRECT.GET.KV_JOBS.$KV.JOBS."+forgedID))
	wantDenied(t, v, "subscribe to $KV.JOBS.>", "$KV.JOBS.>", subscribeUntilRefused(nc, "$KV.JOBS.>"))
	wantNothingForged(t, a)
}

// forged is the body of every forgery of the intruder tests, and forgedID the job they name.
const (
	forged   = `{"forged":true}`
	forgedID = "7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f"
)

// stores are the JetStream streams behind the streams and buckets the bridge makes at start-up.
var stores = []string{"WEBHOOKS", "RESULTS", "DEADLETTER", "SLOWLANE", "KV_JOBS", "KV_BRIDGE_LEASES",
	"KV_BRIDGE_IDEMPOTENCY", "KV_BRIDGE_BUDGET", "KV_BRIDGE_HISTORY"}

// wantDenied does op, with a context of its own, and wants the server to refuse it with a permissions
// violation naming subject (or, ending in ".", a subject it begins). op's context ends when that refusal
// comes: a refused request gets no answer, and waits for nothing more. op succeeding fails the test, and
// so does a refusal that does not come within 5 s: a timeout is not a refusal.
func wantDenied(t *testing.T, v violations, what, subject string, op func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	named := make(chan error, 1)
	go func() {
		for {
			select {
			case err := <-v.ch:
				if strings.Contains(err.Error(), `"`+subject) {
					named <- err
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	err := op(ctx)
	if err == nil {
		t.Errorf("%s: done, want a permissions violation", what)
		return
	}
	<-ctx.Done()
	select {
	case <-named:
	default:
		t.Errorf("%s: %v, and no permissions violation naming %q within 5 s", what, err, subject)
	}
}

// wantForgeryDenied wants a publish of a forged message to each subject refused, naming the subject.
func wantForgeryDenied(t *testing.T, v violations, js jetstream.JetStream, subjects []string) {
	t.Helper()
	for _, subj := range subjects {
		wantDenied(t, v, "publish to "+subj, subj, func(ctx context.Context) error {
			_, err := js.Publish(ctx, subj, []byte(forged))
			return err
		})
	}
}

// wantRemovalDenied wants the delete and the purge of each store refused, naming the API subject.
func wantRemovalDenied(t *testing.T, v violations, nc *nats.Conn, stores []string) {
	t.Helper()
	for _, store := range stores {
		wantDenied(t, v, "delete "+store, "$JS.API.STREAM.DELETE."+store, apiRequest(nc, "$JS.API.STREAM.DELETE."+store))
		wantDenied(t, v, "purge "+store, "$JS.API.STREAM.PURGE."+store, apiRequest(nc, "$JS.API.STREAM.PURGE."+store))
	}
}

// apiRequest is a request to a JetStream API subject, with an empty body.
func apiRequest(nc *nats.Conn, subject string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, subject, nil)
		return err
	}
}

// subscribeUntilRefused subscribes to subject and holds the subscription until the context ends: when the
// server refuses it, or after the deadline.
func subscribeUntilRefused(nc *nats.Conn, subject string) func(context.Context) error {
	return func(ctx context.Context) error {
		sub, err := nc.SubscribeSync(subject)
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		if err := nc.Flush(); err != nil {
			return err
		}
		<-ctx.Done()
		return ctx.Err()
	}
}

// wantNothingForged wants no forged message in RESULTS (fences included), WEBHOOKS or the JOBS bucket's
// stream, read as the bridge reads them. The bridge's own messages come and go while it works, so it
// counts the forgeries, not all the messages.
func wantNothingForged(t *testing.T, a *App) {
	t.Helper()
	ctx := natstest.Ctx(t)
	for _, stream := range []string{"RESULTS", "WEBHOOKS", "KV_JOBS"} {
		s, err := a.nats.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Fatal(err)
			}
			if err == nil && string(m.Data) == forged {
				n++
			}
		}
		if n != 0 {
			t.Errorf("%s holds %d forged messages, want 0", stream, n)
		}
	}
}

// TestOpsUserReadsButCannotForge: the ops user, whose seed the bridge keeps in its data directory for the
// operator's commands, reads every stream and bucket, but cannot write a result, its fence, a job, the
// history, a dead letter or the slow lane, nor delete or purge any stream or bucket, nor change RESULTS:
// each refused with a permissions violation naming the subject, and nothing forged is stored.
func TestOpsUserReadsButCannotForge(t *testing.T) {
	cfg := embeddedConfig(t)
	a := startApp(t, cfg, zerolog.Nop())
	seed := filepath.Join(cfg.DataDir, natsx.OpsSeedFile)
	if fi, err := os.Stat(seed); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ops seed %s: %v, mode %v; want a 0600 file", seed, err, fi.Mode())
	}
	v := violations{make(chan error, 16)}
	nc, err := nats.Connect(a.Server().ClientURL(), opsUser(t, cfg), v.option())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := natstest.Ctx(t)
	if _, err := js.KeyValue(ctx, contract.Default.BucketJobs); err != nil {
		t.Errorf("ops cannot open JOBS: %v", err)
	}
	if _, err := js.OrderedConsumer(ctx, contract.Default.StreamWebhooks, jetstream.OrderedConsumerConfig{}); err != nil {
		t.Errorf("ops cannot read WEBHOOKS: %v", err)
	}
	wantForgeryDenied(t, v, js, []string{"results.prompt", "bridge.result." + forgedID, "$KV.JOBS." + forgedID,
		"$KV.BRIDGE_HISTORY." + forgedID, "deadletter.not_found", "slowlane.unknown_job"})
	wantRemovalDenied(t, v, nc, stores)
	wantDenied(t, v, "update RESULTS", "$JS.API.STREAM.UPDATE.RESULTS", apiRequest(nc, "$JS.API.STREAM.UPDATE.RESULTS"))
	wantNothingForged(t, a)
}

// TestNonLoopbackListenerNeedsUsers: the embedded server refuses to listen beyond loopback without users,
// with one line naming the variables; with users from BRIDGE_NATS_CONFIG it starts, and refuses
// anonymous clients.
func TestNonLoopbackListenerNeedsUsers(t *testing.T) {
	cfg := embeddedConfig(t)
	cfg.NATSListen = "0.0.0.0:-1"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), cfg, zerolog.Nop())
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "BRIDGE_NATS_LISTEN: ") ||
		!strings.Contains(err.Error(), "BRIDGE_NATS_CONFIG") {
		t.Fatalf("non-loopback listener without users: %v, want one line naming BRIDGE_NATS_LISTEN and BRIDGE_NATS_CONFIG", err)
	}

	user, err := natsx.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte("authorization { users = [ { nkey: "+user.Public()+" } ] }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.NATSConfig = conf
	a := startApp(t, cfg, zerolog.Nop())
	url := strings.Replace(a.Server().ClientURL(), "0.0.0.0", "127.0.0.1", 1)
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("anonymous client accepted on a listener beyond loopback")
	}
}
