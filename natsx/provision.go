package natsx

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
)

// ProvisionConfig names and sizes the streams and buckets.
type ProvisionConfig struct {
	// Names are the bridge's names (its namespace's); the zero Names means contract.Default.
	Names contract.Names
	// Replicas of every stream and bucket: 1 on a single node, 3 (or 5) on a cluster.
	Replicas int
	// DuplicateWindow of WEBHOOKS, RESULTS and SLOWLANE; longer than the longest job deadline.
	DuplicateWindow time.Duration
	// Retention is how long WEBHOOKS, RESULTS and DEADLETTER keep messages for replay, and how long a
	// webhook may wait in SLOWLANE.
	Retention time.Duration
	// MaxMsgSize is the largest message a stream accepts.
	MaxMsgSize int32
	// MaxBytes caps each stream's size; when full, new publishes fail (ingest answers 503) rather than
	// old messages being dropped silently. Zero is unlimited.
	MaxBytes int64
	// JobsRetention is how long a JOBS record lives after its last update. Zero, the default, keeps every
	// record for ever: a job whose result is out keeps its tombstone, the long-term idempotency record,
	// so a webhook, a replay or a redrive that comes back after any time publishes nothing again. A
	// positive value gives that up for jobs older than it.
	JobsRetention time.Duration
	// LeaseTTL is the lifetime of a role lease in BRIDGE_LEASES without renewal.
	LeaseTTL time.Duration
	// IdempotencyTTL is how long BRIDGE_IDEMPOTENCY remembers a submit idempotency key. Zero means 24h.
	IdempotencyTTL time.Duration
}

func (c *ProvisionConfig) setDefaults() {
	c.Names = c.Names.OrDefault()
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 20 * time.Minute
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = 1 << 20
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.IdempotencyTTL == 0 {
		c.IdempotencyTTL = 24 * time.Hour
	}
}

// Validate reports the first invalid field.
func (c *ProvisionConfig) Validate() error {
	switch {
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("replicas %d: must be 1 to 5", c.Replicas)
	case c.DuplicateWindow <= 0:
		return fmt.Errorf("duplicate window %v: must be positive", c.DuplicateWindow)
	case c.Retention < c.DuplicateWindow:
		return fmt.Errorf("retention %v: must not be shorter than the duplicate window %v", c.Retention, c.DuplicateWindow)
	case c.MaxMsgSize < 1024:
		return fmt.Errorf("max message size %d: must be at least 1024 bytes", c.MaxMsgSize)
	case c.MaxBytes < 0:
		return fmt.Errorf("max bytes %d: must not be negative", c.MaxBytes)
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("lease ttl %v: must be at least 1s", c.LeaseTTL)
	case c.IdempotencyTTL < time.Second:
		return fmt.Errorf("idempotency ttl %v: must be at least 1s", c.IdempotencyTTL)
	}
	return nil
}

// Resources are the provisioned streams and buckets.
type Resources struct {
	Webhooks, Results, DeadLetter, SlowLane jetstream.Stream
	// Jobs is JOBS; wrap it in a jobs.Store.
	Jobs jetstream.KeyValue
	// JobsStream is the stream under JOBS, whose key subjects the compactor purges (jobs.Compactor).
	JobsStream jetstream.Stream
	// Leases is BRIDGE_LEASES, the role leases.
	Leases jetstream.KeyValue
	// Idempotency is BRIDGE_IDEMPOTENCY, the submit idempotency keys.
	Idempotency jetstream.KeyValue
	// IdempotencyStream is the stream under BRIDGE_IDEMPOTENCY, whose key subjects submit (an ended
	// intent) and the compactor (a compacted job's Idempotency-Key) purge ([PurgeKey]).
	IdempotencyStream jetstream.Stream
	// Budget is BRIDGE_BUDGET, the account-wide upstream budget.
	Budget jetstream.KeyValue
	// History is BRIDGE_HISTORY, the delivered jobs' ids; wrap it in a history.Store.
	History jetstream.KeyValue
	// Layout is the layout of the state at start-up (contract.LayoutOf JOBS): [contract.Layout] on a store
	// this release created or upgraded, [contract.LayoutTombstones] on one an earlier release created.
	Layout int
}

// StreamConfigs returns the configurations of WEBHOOKS, RESULTS, DEADLETTER and SLOWLANE.
func StreamConfigs(cfg ProvisionConfig) []jetstream.StreamConfig {
	cfg.setDefaults()
	mk := func(name, desc string, dupes time.Duration, subjects ...string) jetstream.StreamConfig {
		discard, maxBytes := jetstream.DiscardOld, int64(-1)
		if cfg.MaxBytes > 0 {
			discard, maxBytes = jetstream.DiscardNew, cfg.MaxBytes
		}
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			MaxAge:      cfg.Retention,
			MaxBytes:    maxBytes,
			MaxMsgSize:  cfg.MaxMsgSize,
			Discard:     discard,
			Duplicates:  dupes,
		}
	}
	n := cfg.Names
	results := mk(n.StreamResults, "verified moderation results, one per job (each fenced by "+n.SubjectResultFence+"<job_id>)",
		cfg.DuplicateWindow, subjectsOf(n, n.StreamResults)...)
	// The fence no longer uses atomic batches (OncePublisher). Still allowed, so that existing streams
	// need no update and processes of the earlier version keep working in a rolling upgrade.
	results.AllowAtomicPublish = true
	// The slow lane holds a webhook only until the verifier has handled it, so its state is the work in
	// flight; its Nats-Msg-Id (the message moved there) collapses a move retried after a crash.
	lane := mk(n.StreamSlowLane, "webhooks of unknown jobs waiting for the verifier's slow lane", cfg.DuplicateWindow,
		subjectsOf(n, n.StreamSlowLane)...)
	lane.Retention = jetstream.WorkQueuePolicy
	return []jetstream.StreamConfig{
		mk(n.StreamWebhooks, "raw upstream webhooks, deduplicated by job_id", cfg.DuplicateWindow, subjectsOf(n, n.StreamWebhooks)...),
		results,
		// 2 minutes, or the retention when shorter (a trial's): a stream's window cannot pass its MaxAge.
		mk(n.StreamDeadLetter, "webhooks that could not be verified", min(2*time.Minute, cfg.Retention), subjectsOf(n, n.StreamDeadLetter)...),
		lane,
	}
}

// subjectsOf are the subjects of the bridge's stream name, from [contract.Names.Owned].
func subjectsOf(n contract.Names, name string) []string {
	r, _ := n.OwnedStream(name)
	return r.Subjects
}

// Provision creates or updates the streams and buckets so that they match cfg. It is idempotent and safe
// to run from every bridge process at start-up. A setting that the server cannot change in place fails
// with ErrIncompatible naming the stream and the setting.
func Provision(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig) (Resources, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Resources{}, fmt.Errorf("provision: %w", err)
	}
	res, err := openStreams(ctx, js, cfg, ensureStream)
	if err != nil {
		return Resources{}, err
	}

	n := cfg.Names
	if res.Jobs, res.Layout, err = ensureJobs(ctx, js, jobsConfigFor(cfg)); err != nil {
		return Resources{}, err
	}
	buckets := bucketsOf(cfg, &res)
	for _, b := range buckets {
		kv, err := ensureKV(ctx, js, b.cfg)
		if err != nil {
			return Resources{}, err
		}
		*b.kv = kv
	}
	jobsStream, err := js.Stream(ctx, contract.KVStream(n.BucketJobs))
	if err != nil {
		return Resources{}, fmt.Errorf("stream %s: %w", contract.KVStream(n.BucketJobs), err)
	}
	res.JobsStream = jobsStream
	if res.IdempotencyStream, err = js.Stream(ctx, contract.KVStream(n.BucketIdempotency)); err != nil {
		return Resources{}, fmt.Errorf("stream %s: %w", contract.KVStream(n.BucketIdempotency), err)
	}
	history, err := ensureHistory(ctx, js, n.BucketHistory, cfg.Replicas)
	if err != nil {
		return Resources{}, err
	}
	res.History = history
	return res, nil
}

// jobsConfigFor is the configuration of JOBS.
func jobsConfigFor(cfg ProvisionConfig) jetstream.KeyValueConfig {
	return bucketConfig(cfg.Names.BucketJobs, "jobs the bridge tracks, keyed by job_id", cfg.JobsRetention, cfg.Replicas)
}

// bucketOf is one of the bridge's buckets besides JOBS and the history, and where its handle goes.
type bucketOf struct {
	kv  *jetstream.KeyValue
	cfg jetstream.KeyValueConfig
}

// bucketsOf are the leases, idempotency and budget buckets of cfg, their handles going into res.
func bucketsOf(cfg ProvisionConfig, res *Resources) []bucketOf {
	n := cfg.Names
	return []bucketOf{
		{&res.Leases, bucketConfig(n.BucketLeases, "role leases, such as the active reconciler", cfg.LeaseTTL, cfg.Replicas)},
		{&res.Idempotency, bucketConfig(n.BucketIdempotency, "submit idempotency keys: sha256(modality, key) to job_id",
			cfg.IdempotencyTTL, cfg.Replicas)},
		{&res.Budget, bucketConfig(contract.BucketBudget, "the account-wide upstream budget: the shared token bucket and each process's usage",
			0, cfg.Replicas)},
	}
}

// openStreams is what Provision and Check begin with, once cfg is validated: the server's version, then
// each of the four streams through open (create or update, or check), into a Resources.
func openStreams(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig,
	open func(context.Context, jetstream.JetStream, jetstream.StreamConfig) (jetstream.Stream, error)) (Resources, error) {
	if err := checkServer(ctx, js); err != nil {
		return Resources{}, err
	}
	streams := make([]jetstream.Stream, 0, 4)
	for _, sc := range StreamConfigs(cfg) {
		s, err := open(ctx, js, sc)
		if err != nil {
			return Resources{}, err
		}
		streams = append(streams, s)
	}
	var res Resources
	res.Webhooks, res.Results, res.DeadLetter, res.SlowLane = streams[0], streams[1], streams[2], streams[3]
	return res, nil
}

// historyConfig is the stream of BRIDGE_HISTORY: a KV bucket (one value per key, no TTL, file storage)
// made as a stream, because a bucket made by nats.go always allows direct gets, which any replica
// answers, a lagging follower included. With direct gets off every read of the bucket is the stream
// leader's, so a lookup right after an add, or a split's child read after its marker, is never stale.
// Its duplicate window is the shortest the server takes (below).
func historyConfig(bucket string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              contract.KVStream(bucket),
		Description:       "ids of delivered jobs, in sorted blocks keyed by id prefix",
		Subjects:          []string{contract.KVSubject(bucket, ">")},
		Retention:         jetstream.LimitsPolicy,
		MaxMsgsPerSubject: 1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          max(replicas, 1),
		Discard:           jetstream.DiscardNew,
		// No write of the history carries a Nats-Msg-Id, and a stream rereads every message of its
		// duplicate window when its server starts (to rebuild the window): with the default 2 minutes,
		// a restart after a large compaction loaded every block it rewrote (80 MB of caches at 10M
		// jobs). 100 ms is the least the server takes.
		Duplicates:  100 * time.Millisecond,
		AllowRollup: true,
		DenyDelete:  true,
		AllowDirect: false,
	}
}

// ensureHistory creates the history bucket (BRIDGE_HISTORY), or updates an existing one to
// [historyConfig] (turning direct gets off on a bucket made otherwise), and opens it as a bucket.
func ensureHistory(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (jetstream.KeyValue, error) {
	want := historyConfig(bucket, replicas)
	_, err := js.CreateStream(ctx, want)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		if _, err = js.UpdateStream(ctx, want); err != nil {
			return nil, fmt.Errorf("%w: bucket %s: update: %v", ErrIncompatible, bucket, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// bucketConfig is the configuration of one of the bridge's buckets: one value per key, on disk, entries
// expiring after ttl (zero: never).
func bucketConfig(bucket, desc string, ttl time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: desc,
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// EnsureReplayBucket opens BRIDGE_REPLAY, the progress of bridge replay, and creates it with replicas
// (at least 1) if it does not exist yet: it is made on first use rather than by [Provision], so that a
// deployment that never replays has none, and an operator can replay on a deployment provisioned before
// it existed.
func EnsureReplayBucket(ctx context.Context, js jetstream.JetStream, names contract.Names, replicas int) (jetstream.KeyValue, error) {
	bucket := names.OrDefault().BucketReplay
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, bucketConfig(bucket, "bridge replay progress, keyed by replay name", 0, max(replicas, 1)))
		if errors.Is(err, jetstream.ErrBucketExists) { // another replay created it first
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return kv, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateStream(ctx, want)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil, fmt.Errorf("create stream %s: %w", want.Name, err)
	}
	cur, err := js.Stream(ctx, want.Name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", want.Name, err)
	}
	have := cur.CachedInfo().Config
	if setting := immutableDiff(have, want); setting != "" {
		return nil, fmt.Errorf("%w: stream %s: %s", ErrIncompatible, want.Name, setting)
	}
	// Keep what operators may have added (extra subjects, placement, sources) and apply ours.
	upd := have
	upd.Description, upd.Retention, upd.Storage = want.Description, want.Retention, want.Storage
	upd.Replicas, upd.MaxAge, upd.MaxBytes = want.Replicas, want.MaxAge, want.MaxBytes
	upd.MaxMsgSize, upd.Discard, upd.Duplicates = want.MaxMsgSize, want.Discard, want.Duplicates
	upd.AllowAtomicPublish = upd.AllowAtomicPublish || want.AllowAtomicPublish
	upd.Subjects = union(have.Subjects, want.Subjects)
	s, err = js.UpdateStream(ctx, upd)
	if err != nil {
		return nil, fmt.Errorf("%w: stream %s: update: %v", ErrIncompatible, want.Name, err)
	}
	return s, nil
}

// immutableDiff names the first setting the server cannot change in place, or "".
func immutableDiff(have, want jetstream.StreamConfig) string {
	switch {
	case have.Storage != want.Storage:
		return fmt.Sprintf("storage is %s, want %s (cannot change in place; move the data or delete the stream)", have.Storage, want.Storage)
	case have.Retention != want.Retention:
		return fmt.Sprintf("retention is %s, want %s (cannot change in place)", have.Retention, want.Retention)
	}
	return ""
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(a, s) {
			out = append(out, s)
		}
	}
	return out
}

// ensureKV creates the bucket, or updates an existing one to want. It creates first and updates only an
// existing bucket: two processes starting together that both call CreateOrUpdateKeyValue (update, not
// found, create) on a fresh R3 bucket were seen to get no answer from the cluster at all. A create racing
// another is answered with ErrBucketExists.
func ensureKV(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, want)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketExists) {
		return nil, fmt.Errorf("create bucket %s: %w", want.Bucket, err)
	}
	cur, err := js.KeyValue(ctx, want.Bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", want.Bucket, err)
	}
	st, err := cur.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s status: %w", want.Bucket, err)
	}
	if st.BackingStore() != "JetStream" {
		return nil, fmt.Errorf("%w: bucket %s: backing store %s", ErrIncompatible, want.Bucket, st.BackingStore())
	}
	kv, err = js.UpdateKeyValue(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("%w: bucket %s: update: %v", ErrIncompatible, want.Bucket, err)
	}
	return kv, nil
}
