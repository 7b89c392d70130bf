package natsx_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/natsx"
)

func TestProvisionIsIdempotent(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	cfg := natsx.ProvisionConfig{DuplicateWindow: 30 * time.Minute, Retention: 48 * time.Hour}
	if _, err := natsx.Provision(ctx, js, cfg); err != nil {
		t.Fatalf("first provision: %v", err)
	}
	cfg.Retention = 72 * time.Hour
	res, err := natsx.Provision(ctx, js, cfg)
	if err != nil {
		t.Fatalf("second provision: %v", err)
	}
	for _, s := range []jetstream.Stream{res.Webhooks, res.Results, res.DeadLetter} {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.MaxAge != 72*time.Hour || info.Config.Storage != jetstream.FileStorage {
			t.Errorf("%s: max age %v storage %v, want 72h file", info.Config.Name, info.Config.MaxAge, info.Config.Storage)
		}
	}
	info, _ := res.Webhooks.Info(ctx)
	if info.Config.Duplicates != 30*time.Minute {
		t.Errorf("WEBHOOKS duplicate window %v, want 30m", info.Config.Duplicates)
	}
	if res.Jobs.Bucket() != contract.Default.BucketJobs {
		t.Errorf("jobs bucket %q", res.Jobs.Bucket())
	}
}

// TestProvisionOwnsEveryBucket: Provision makes every bucket of the bridge's with its settings, and
// EnsureReplayBucket the replay bucket on first use only.
func TestProvisionOwnsEveryBucket(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	res, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{IdempotencyTTL: time.Hour})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	tests := []struct {
		name   string
		kv     jetstream.KeyValue
		bucket string
		ttl    time.Duration
	}{
		{"jobs", res.Jobs, contract.Default.BucketJobs, 0}, // never expires: delivered jobs keep their tombstone for ever
		{"leases", res.Leases, contract.Default.BucketLeases, 10 * time.Second},
		{"idempotency", res.Idempotency, contract.Default.BucketIdempotency, time.Hour},
		{"budget", res.Budget, contract.BucketBudget, 0},
		{"history", res.History, contract.Default.BucketHistory, 0}, // never expires: the delivered jobs' ids
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := tt.kv.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Bucket() != tt.bucket || st.TTL() != tt.ttl || st.History() != 1 {
				t.Errorf("bucket %s ttl %v history %d, want %s ttl %v history 1", st.Bucket(), st.TTL(), st.History(), tt.bucket, tt.ttl)
			}
			si, err := js.Stream(ctx, contract.KVStream(tt.bucket))
			if err != nil {
				t.Fatalf("stream %s: %v", contract.KVStream(tt.bucket), err)
			}
			if cfg := si.CachedInfo().Config; cfg.Storage != jetstream.FileStorage || cfg.Replicas != 1 {
				t.Errorf("stream %s storage %v replicas %d, want file, 1", cfg.Name, cfg.Storage, cfg.Replicas)
			}
		})
	}
	if _, err := js.KeyValue(ctx, contract.Default.BucketReplay); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("replay bucket before the first replay: %v, want not found", err)
	}
	kv, err := natsx.EnsureReplayBucket(ctx, js, contract.Default, 1)
	if err != nil || kv.Bucket() != contract.Default.BucketReplay {
		t.Fatalf("EnsureReplayBucket: %v", err)
	}
	if _, err := natsx.EnsureReplayBucket(ctx, js, contract.Default, 1); err != nil {
		t.Fatalf("EnsureReplayBucket again: %v", err)
	}
	if b, ok := contract.KVBucket(contract.KVStream(contract.Default.BucketReplay)); !ok || b != contract.Default.BucketReplay {
		t.Errorf("KVBucket(KVStream(%s)) = %q, %v", contract.Default.BucketReplay, b, ok)
	}
}

// TestProvisionHistoryReadsFromTheLeader: BRIDGE_HISTORY allows no direct gets, which any replica would
// answer however far behind, so that every read of a history block is the stream leader's; also when the
// bucket was made before as an ordinary KV bucket (direct gets on). Its duplicate window is the
// shortest, so that a restart does not reread the blocks written in the last two minutes.
func TestProvisionHistoryReadsFromTheLeader(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "BRIDGE_HISTORY", History: 1}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // over the ordinary bucket, then over its own
		if _, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{}); err != nil {
			t.Fatalf("provision: %v", err)
		}
		s, err := js.Stream(ctx, "KV_BRIDGE_HISTORY")
		if err != nil {
			t.Fatal(err)
		}
		if cfg := s.CachedInfo().Config; cfg.AllowDirect || cfg.MaxMsgsPerSubject != 1 || cfg.MaxAge != 0 || cfg.Storage != jetstream.FileStorage ||
			cfg.Duplicates != 100*time.Millisecond {
			t.Errorf("KV_BRIDGE_HISTORY direct %v history %d max age %v storage %v duplicates %v, want no direct gets, 1, 0, file, 100ms",
				cfg.AllowDirect, cfg.MaxMsgsPerSubject, cfg.MaxAge, cfg.Storage, cfg.Duplicates)
		}
	}
}

func TestProvisionRejectsIncompatibleStream(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: contract.Default.StreamResults, Subjects: []string{"results.>"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	_, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{})
	if !errors.Is(err, natsx.ErrIncompatible) {
		t.Fatalf("err = %v, want ErrIncompatible", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "RESULTS") || !strings.Contains(msg, "storage") || strings.Contains(msg, "\n") {
		t.Errorf("error %q should be one line naming the stream and the setting", msg)
	}
}

func TestProvisionClusterR3(t *testing.T) {
	t.Parallel()
	c := natstest.RunCluster(t, 3)
	_, js := natstest.Connect(t, c.URLs())
	ctx := natstest.Ctx(t)
	res, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{Replicas: 3})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	info, err := res.Results.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Errorf("replicas %d, want 3", info.Config.Replicas)
	}
	if st, err := res.History.Status(ctx); err != nil || st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas != 3 {
		t.Errorf("history bucket status %v, %v: want 3 replicas", st, err)
	}
	if _, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{Replicas: 3}); err != nil {
		t.Fatalf("re-provision: %v", err)
	}
}

func TestRunEmbeddedServesJetStream(t *testing.T) {
	t.Parallel()
	s, err := natsx.RunEmbedded(natsx.ServerConfig{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := natsx.Connect(natsx.ConnConfig{InProcess: s, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := natsx.Provision(natstest.Ctx(t), js, natsx.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
}

func TestRunEmbeddedRejectsEmptyStore(t *testing.T) {
	t.Parallel()
	if _, err := natsx.RunEmbedded(natsx.ServerConfig{Listen: "127.0.0.1:0"}); err == nil {
		t.Fatal("want an error for an empty store dir")
	}
}

// TestProvisionMakesWhatTheContractOwns: the server holds, after Provision, exactly the streams and
// buckets of DESIGN.md made at start-up (the replay bucket comes on first use), each stream with its
// subjects, so that contract.Default.Owned, which namespace and permission tests iterate, is the whole list.
func TestProvisionMakesWhatTheContractOwns(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	if _, err := natsx.Provision(ctx, js, natsx.ProvisionConfig{}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	want := map[string][]string{
		"WEBHOOKS":              {"webhooks.>"},
		"RESULTS":               {"results.>", "bridge.result.>"},
		"DEADLETTER":            {"deadletter.>"},
		"SLOWLANE":              {"slowlane.>"},
		"KV_JOBS":               {"$KV.JOBS.>"},
		"KV_BRIDGE_LEASES":      {"$KV.BRIDGE_LEASES.>"},
		"KV_BRIDGE_IDEMPOTENCY": {"$KV.BRIDGE_IDEMPOTENCY.>"},
		"KV_BRIDGE_BUDGET":      {"$KV.BRIDGE_BUDGET.>"},
		"KV_BRIDGE_HISTORY":     {"$KV.BRIDGE_HISTORY.>"},
	}
	got := map[string][]string{}
	for info := range js.ListStreams(ctx).Info() {
		got[info.Config.Name] = info.Config.Subjects
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("streams after Provision:\n got %v\nwant %v", got, want)
	}
	if names := contract.Default.StoreNames(false); len(names) != len(want) {
		t.Errorf("contract.Default.StoreNames(false) = %v, want the %d above", names, len(want))
	}
	if names := contract.Default.StoreNames(true); !slices.Contains(names, "KV_BRIDGE_REPLAY") {
		t.Errorf("contract.Default.StoreNames(true) = %v, want KV_BRIDGE_REPLAY among them", names)
	}
}
