package natsx_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/natsx"
)

// earlierJobs is JOBS as the releases before the history made and updated it at every start.
var earlierJobs = testworld.EarlierJobs(1)

// TestLayoutOfAFreshStore: Provision makes JOBS at layout 2 (metadata bridge.layout "2", per-message TTLs
// allowed), and the earlier release's update of JOBS at its start is then refused: a rollback stops there.
func TestLayoutOfAFreshStore(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	res, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	if res.Layout != 2 {
		t.Fatalf("layout %d, want 2", res.Layout)
	}
	info, err := res.JobsStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Metadata["bridge.layout"] != "2" || !info.Config.AllowMsgTTL {
		t.Fatalf("KV_JOBS metadata %v, allow msg TTL %v; want bridge.layout 2 and true", info.Config.Metadata, info.Config.AllowMsgTTL)
	}
	if _, err := js.UpdateKeyValue(ctx, earlierJobs); err == nil || !strings.Contains(err.Error(), "message TTL status can not be disabled") {
		t.Fatalf("the earlier release's update of JOBS: %v, want it refused", err)
	}
	if _, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{}); err != nil {
		t.Fatalf("provision again: %v", err)
	}
	if l, err := natsx.JobsLayout(ctx, res.JobsStream); err != nil || l != 2 {
		t.Fatalf("layout after a second provision: %d %v, want 2", l, err)
	}
}

// TestLayoutOfAnEarlierStore: on JOBS made by the earlier release, Provision keeps layout 1 (the earlier
// release still starts beside it) until UpgradeLayout, which is idempotent and keeps other metadata.
func TestLayoutOfAnEarlierStore(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	earlier := earlierJobs
	earlier.Metadata = map[string]string{"team": "moderation"}
	if _, err := js.CreateKeyValue(ctx, earlier); err != nil {
		t.Fatal(err)
	}
	res, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	if res.Layout != 1 {
		t.Fatalf("layout %d, want 1", res.Layout)
	}
	if _, err := js.UpdateKeyValue(ctx, earlier); err != nil {
		t.Fatalf("the earlier release's update of JOBS at layout 1: %v", err)
	}
	for i, want := range []int{1, 2} {
		from, err := natsx.UpgradeLayout(ctx, js, contract.Default)
		if err != nil || from != want {
			t.Fatalf("upgrade %d: from %d %v, want from %d", i+1, from, err, want)
		}
	}
	info, err := res.JobsStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if md := info.Config.Metadata; md["bridge.layout"] != "2" || md["team"] != "moderation" || !info.Config.AllowMsgTTL {
		t.Fatalf("after the upgrade: metadata %v, allow msg TTL %v", md, info.Config.AllowMsgTTL)
	}
	if res, err = natsx.Provision(ctx, js, natsx.ProvisionConfig{}); err != nil || res.Layout != 2 {
		t.Fatalf("provision after the upgrade: layout %d %v, want 2", res.Layout, err)
	}
	if _, err := js.UpdateKeyValue(ctx, earlier); err == nil {
		t.Fatal("the earlier release's update of JOBS after the upgrade succeeded, want it refused")
	}
}

// TestLayoutNewerThanThisRelease: a JOBS bucket at a layout this release does not know stops Provision with
// one line naming the bucket and the layout.
func TestLayoutNewerThanThisRelease(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	newer := earlierJobs
	newer.Metadata = map[string]string{"bridge.layout": "3"}
	newer.LimitMarkerTTL = time.Minute
	if _, err := js.CreateKeyValue(ctx, newer); err != nil {
		t.Fatal(err)
	}
	_, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{})
	if !errors.Is(err, natsx.ErrIncompatible) || !strings.Contains(err.Error(), `bucket JOBS is at layout "3"`) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("provision on layout 3: %v, want one line naming JOBS at layout 3", err)
	}
	if _, err := natsx.UpgradeLayout(ctx, js, contract.Default); !errors.Is(err, natsx.ErrIncompatible) {
		t.Fatalf("upgrade from layout 3: %v, want ErrIncompatible", err)
	}
	if contract.LayoutOf(map[string]string{"bridge.layout": "x"}) != 0 || contract.LayoutOf(nil) != 1 {
		t.Fatal("LayoutOf: want 0 for garbage and 1 without the key")
	}
}

// TestStartUpStopsOnAServerTooOld: a server whose JetStream API level is 0 (nats-server before 2.11) stops
// Provision and Check, the first step of start-up, with ErrServerTooOld in one line naming the oldest
// server this release runs on. The old server is a stub: a responder that answers the JetStream account
// info request, under an API prefix of its own, as nats-server 2.10 does (no API level).
func TestStartUpStopsOnAServerTooOld(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	nc, _ := natstest.Connect(t, n.ClientURL())
	sub, err := nc.Subscribe("old.api.INFO", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.account_info_response","memory":0,"storage":0,"streams":0,"consumers":0,"limits":{},"api":{"total":0,"errors":0}}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	js, err := jetstream.NewWithAPIPrefix(nc, "old.api")
	if err != nil {
		t.Fatal(err)
	}
	for name, start := range map[string]func() error{
		"provision": func() error { _, err := natsx.Provision(natstest.Ctx(t), js, natsx.ProvisionConfig{}); return err },
		"check":     func() error { _, err := natsx.Check(natstest.Ctx(t), js, natsx.ProvisionConfig{}); return err },
	} {
		err := start()
		if !errors.Is(err, natsx.ErrServerTooOld) || strings.Contains(err.Error(), "\n") ||
			!strings.Contains(err.Error(), "is older than 2.11.0, the oldest this release runs on") {
			t.Errorf("%s on a server of API level 0: %v, want one line of ErrServerTooOld naming 2.11.0", name, err)
		}
	}
}
