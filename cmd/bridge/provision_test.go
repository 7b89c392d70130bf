package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/bridge"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/natsx"
)

// TestProvisionCommandAndProvisionFalse: on a server nobody provisioned, bridge provision -check and a
// bridge with BRIDGE_PROVISION=false each stop with one line naming what is missing and create nothing;
// after bridge provision (in the namespace the flag names, or none) both find what they need.
func TestProvisionCommandAndProvisionFalse(t *testing.T) {
	srv := natstest.RunServer(t)
	env := map[string]string{"BRIDGE_NATS_URL": srv.ClientURL()}

	_, _, err := runCmd(t, env, "provision", "-check", "-namespace", "ops")
	if err == nil || !strings.Contains(err.Error(), "stream OPS_WEBHOOKS: missing") {
		t.Fatalf("provision -check on an empty server: %v, want stream OPS_WEBHOOKS missing", err)
	}
	start := func() error {
		cfg, err := parseConfig(map[string]string{"BRIDGE_NATS_URL": srv.ClientURL(), "BRIDGE_ROLES": "ingest",
			"BRIDGE_HTTP_ADDR": "127.0.0.1:0", "BRIDGE_PROVISION": "false"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a, err := bridge.New(ctx, cfg, zerolog.Nop())
		if err != nil {
			return err
		}
		cancel()
		return a.Run(ctx)
	}
	err = start()
	if err == nil || strings.Count(err.Error(), "\n") > 0 ||
		!strings.HasPrefix(err.Error(), "BRIDGE_PROVISION=false: not provisioned: stream WEBHOOKS: missing") {
		t.Fatalf("start with BRIDGE_PROVISION=false on an empty server: %v, want one line naming stream WEBHOOKS", err)
	}

	out, _, err := runCmd(t, env, "provision")
	if err != nil || !strings.Contains(out, "provisioned 9 streams and buckets: [WEBHOOKS RESULTS DEADLETTER SLOWLANE KV_JOBS") {
		t.Fatalf("provision: %v\n%s", err, out)
	}
	if out, _, err = runCmd(t, env, "provision", "-check", "-json"); err != nil || !strings.Contains(out, `"jobs_layout": 2`) {
		t.Fatalf("provision -check after provision: %v\n%s", err, out)
	}
	if _, _, err := runCmd(t, env, "provision", "-check", "-namespace", "ops"); err == nil {
		t.Fatal("provision -check -namespace ops passed, but only the names without a namespace were provisioned")
	}
	if err := start(); err != nil {
		t.Fatalf("start with BRIDGE_PROVISION=false after bridge provision: %v", err)
	}
}

// TestJetStreamDomain: with BRIDGE_JS_DOMAIN the embedded server runs in that domain and the bridge's
// streams are reached through it ($JS.<domain>.API), as a leaf node's or hub's are.
func TestJetStreamDomain(t *testing.T) {
	cfg, err := parseConfig(map[string]string{"BRIDGE_ROLES": "ingest", "BRIDGE_HTTP_ADDR": "127.0.0.1:0",
		"BRIDGE_NATS_LISTEN": "127.0.0.1:-1", "BRIDGE_DATA_DIR": t.TempDir(), "BRIDGE_JS_DOMAIN": "hub"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := bridge.New(ctx, cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = a.Run(ctx) }()
	nc, _ := natstest.Connect(t, a.Server().ClientURL())
	js, err := natsx.NewJetStream(nc, "hub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, "RESULTS"); err != nil { // what an anonymous client may read
		t.Fatalf("RESULTS through domain hub: %v", err)
	}
	if info, err := js.AccountInfo(ctx); err != nil || info.Domain != "hub" {
		t.Fatalf("account info through domain hub: %+v, %v; want domain hub", info, err)
	}
}
