package natsx_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/natsx"
)

// TestCheckFindsWhatIsMissingOrWrong is BRIDGE_PROVISION=false: Check creates nothing, names the first
// stream or bucket that is missing or has a setting the bridge cannot work with, and opens everything once
// the operator (here Provision) has made it right, in a namespace too.
func TestCheckFindsWhatIsMissingOrWrong(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	names, err := contract.NamesFor("ops")
	if err != nil {
		t.Fatal(err)
	}
	cfg := natsx.ProvisionConfig{Names: names, DuplicateWindow: 30 * time.Minute, Retention: 48 * time.Hour}

	_, err = natsx.Check(ctx, js, cfg)
	if !errors.Is(err, natsx.ErrNotProvisioned) || !strings.Contains(err.Error(), "stream OPS_WEBHOOKS: missing") {
		t.Fatalf("Check of an empty server = %v, want ErrNotProvisioned naming stream OPS_WEBHOOKS missing", err)
	}
	if got := streamCount(t, js); got != 0 {
		t.Fatalf("Check created %d streams, want none", got)
	}

	if _, err := natsx.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	res, err := natsx.Check(ctx, js, cfg)
	if err != nil {
		t.Fatalf("Check after Provision: %v", err)
	}
	if res.Jobs == nil || res.History == nil || res.Budget == nil || res.Layout != contract.Layout ||
		res.Results.CachedInfo().Config.Name != "OPS_RESULTS" {
		t.Fatalf("Check opened %+v, want every resource of namespace ops at layout %d", res, contract.Layout)
	}

	// An operator's RESULTS with a shorter duplicate window than the bridge needs.
	s, err := js.Stream(ctx, "OPS_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	sc := s.CachedInfo().Config
	sc.Duplicates = time.Minute
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	_, err = natsx.Check(ctx, js, cfg)
	if !errors.Is(err, natsx.ErrNotProvisioned) ||
		!strings.Contains(err.Error(), "stream OPS_RESULTS: duplicate window is 1m0s, want at least 30m0s") {
		t.Fatalf("Check with a short window = %v, want it named", err)
	}

	if err := js.DeleteKeyValue(ctx, "OPS_BRIDGE_LEASES"); err != nil {
		t.Fatal(err)
	}
	sc.Duplicates = 30 * time.Minute
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	_, err = natsx.Check(ctx, js, cfg)
	if !errors.Is(err, natsx.ErrNotProvisioned) || !strings.Contains(err.Error(), "bucket OPS_BRIDGE_LEASES: missing") {
		t.Fatalf("Check without the leases bucket = %v, want it named", err)
	}
}

func streamCount(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	n := 0
	l := js.StreamNames(natstest.Ctx(t))
	for range l.Name() {
		n++
	}
	return n
}
