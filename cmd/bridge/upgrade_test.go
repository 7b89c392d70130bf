package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/evershield/bridge/access"
	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/natsx"
)

// TestUpgradeFinalize walks a store of the earlier layout through bridge upgrade: status says
// compaction is held, finalize moves it to layout 2 once, and then the earlier release's start-up
// update of JOBS is refused, so a rollback stops rather than running beside compaction. The commands
// run as the ops user, with the role's permissions (access.For).
func TestUpgradeFinalize(t *testing.T) {
	w := testworld.New(t, testworld.WithEarlierLayout(), testworld.WithUsers(&server.User{Username: "admin", Password: "pw-admin"},
		&server.User{Username: "ops", Password: "pw-ops", Permissions: natsx.ServerPermissions(access.For(access.Ops, contract.Default))}))
	env := map[string]string{"BRIDGE_NATS_URL": strings.ReplaceAll(w.URLs, "nats://", "nats://ops:pw-ops@")}

	out, _, err := runCmd(t, env, "upgrade", "status", "-json")
	if err != nil || !strings.Contains(out, `"layout": 1`) || !strings.Contains(out, `"compaction": false`) {
		t.Fatalf("status before: %v\n%s", err, out)
	}
	out, _, err = runCmd(t, env, "upgrade", "finalize")
	if err != nil || !strings.Contains(out, "from layout 1 to 2") {
		t.Fatalf("finalize: %v\n%s", err, out)
	}
	out, _, err = runCmd(t, env, "upgrade", "finalize")
	if err != nil || !strings.Contains(out, "layout 2 already") {
		t.Fatalf("finalize again: %v\n%s", err, out)
	}
	out, _, err = runCmd(t, env, "upgrade", "status")
	if err != nil || !strings.Contains(out, "JOBS is at layout 2") {
		t.Fatalf("status after: %v\n%s", err, out)
	}

	// The earlier release, started again, updates JOBS to its configuration: refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = w.JS.UpdateKeyValue(ctx, testworld.EarlierJobs(1))
	if err == nil || !strings.Contains(err.Error(), "message TTL status can not be disabled") {
		t.Fatalf("earlier release's update after finalize: %v, want refused", err)
	}
}
