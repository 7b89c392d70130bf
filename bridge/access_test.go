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
// JOBS, nor delete or purge a stream. Only the bridge writes results.
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
	if _, err := nc.Request(contract.Default.SubjectJobStatus, []byte(`{"job_id":"7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f"}`), 10*time.Second); err != nil {
		t.Fatalf("jobs.status: %v", err)
	}
	select {
	case err := <-v.ch:
		t.Fatalf("downstream work met a permission violation: %v", err)
	default:
	}

	before := streamMsgs(t, a, contract.Default.StreamResults)
	// What it must not do. A JetStream publish gets no acknowledgement; the server reports the violation.
	for _, subj := range []string{"results.prompt", "bridge.result.7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f", "webhooks.prompt",
		"$KV.JOBS.7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f"} {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.Publish(pctx, subj, []byte(`{"forged":true}`))
		cancel()
		if err == nil {
			t.Errorf("anonymous publish to %s acknowledged", subj)
		}
		if perr := natstest.RecvWithin(t, v.ch, 5*time.Second); !strings.Contains(perr.Error(), subj) {
			t.Errorf("publish to %s: violation %v, want one naming the subject", subj, perr)
		}
	}
	// A request the server refuses gets no answer: each is given 3 s.
	denied, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for what, f := range map[string]func() error{
		"delete DEADLETTER": func() error { return js.DeleteStream(denied, contract.Default.StreamDeadLetter) },
		"purge RESULTS": func() error {
			s, err := js.Stream(denied, contract.Default.StreamResults)
			if err != nil {
				return err
			}
			return s.Purge(denied)
		},
		"read WEBHOOKS": func() error {
			_, err := js.OrderedConsumer(denied, contract.Default.StreamWebhooks, jetstream.OrderedConsumerConfig{})
			return err
		},
		"read JOBS": func() error { _, err := js.KeyValue(denied, contract.Default.BucketJobs); return err },
	} {
		if err := f(); err == nil {
			t.Errorf("anonymous client could %s", what)
		}
	}
	if after := streamMsgs(t, a, contract.Default.StreamResults); after != before {
		t.Errorf("RESULTS went from %d to %d messages: something anonymous was stored", before, after)
	}
}

// streamMsgs counts a stream's messages as the bridge sees them.
func streamMsgs(tb testing.TB, a *App, stream string) uint64 {
	tb.Helper()
	s, err := a.nats.js.Stream(natstest.Ctx(tb), stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(natstest.Ctx(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

// TestOpsUserReadsButCannotForge: the ops user, whose seed the bridge keeps in its data directory for the
// operator's commands, reads every stream and bucket, but cannot write a result or a job, nor delete a
// stream.
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
	// A request the server refuses gets no answer: each is given 3 s.
	denied, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := js.Publish(denied, "results.prompt", []byte(`{}`)); err == nil {
		t.Error("ops publish to results.prompt acknowledged")
	}
	if err := js.DeleteStream(denied, contract.Default.StreamResults); err == nil {
		t.Error("ops deleted RESULTS")
	}
	if err := js.DeleteStream(denied, contract.Default.StreamResults); err == nil {
		t.Error("ops deleted RESULTS")
	}
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
