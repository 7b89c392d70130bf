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

// ErrNotProvisioned means a stream or bucket the bridge needs is missing, or has a setting the bridge
// cannot work with, and provisioning is off; the message names it and what is wrong.
var ErrNotProvisioned = errors.New("not provisioned")

// Check is [Provision] for operators who own the stream configuration (BRIDGE_PROVISION=false): it creates
// and changes nothing, and opens the streams and buckets after checking that each exists with a
// configuration the bridge can work with. Sizes (replicas, max age, max bytes) are the operator's; what
// the bridge's promises rest on is checked: the subjects, retention, storage, at least the duplicate
// window and message size cfg asks for, one value per key, and the layout of JOBS. The first problem is
// returned as ErrNotProvisioned, naming the stream or bucket and the setting.
func Check(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig) (Resources, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Resources{}, fmt.Errorf("check: %w", err)
	}
	res, err := openStreams(ctx, js, cfg, checkStream)
	if err != nil {
		return Resources{}, err
	}
	n := cfg.Names
	if res.Jobs, res.JobsStream, res.Layout, err = checkJobs(ctx, js, jobsConfigFor(cfg)); err != nil {
		return Resources{}, err
	}
	for _, b := range bucketsOf(cfg, &res) {
		if *b.kv, _, err = checkBucket(ctx, js, b.cfg.Bucket); err != nil {
			return Resources{}, err
		}
	}
	if res.IdempotencyStream, err = js.Stream(ctx, contract.KVStream(n.BucketIdempotency)); err != nil {
		return Resources{}, fmt.Errorf("stream %s: %w", contract.KVStream(n.BucketIdempotency), err)
	}
	hist := historyConfig(n.BucketHistory, cfg.Replicas)
	hs, err := checkStream(ctx, js, hist)
	if err != nil {
		return Resources{}, err
	}
	if have := hs.CachedInfo().Config; have.AllowDirect || !have.AllowRollup {
		return Resources{}, fmt.Errorf("%w: bucket %s: direct gets %v, rollups %v; want direct gets off and rollups on (every read the stream leader's)",
			ErrNotProvisioned, n.BucketHistory, have.AllowDirect, have.AllowRollup)
	}
	if res.History, err = js.KeyValue(ctx, n.BucketHistory); err != nil {
		return Resources{}, fmt.Errorf("%w: bucket %s: %v", ErrNotProvisioned, n.BucketHistory, err)
	}
	return res, nil
}

// checkStream opens the stream want names and checks its configuration against want.
func checkStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: stream %s: missing", ErrNotProvisioned, want.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", want.Name, err)
	}
	if problem := streamProblem(s.CachedInfo().Config, want); problem != "" {
		return nil, fmt.Errorf("%w: stream %s: %s", ErrNotProvisioned, want.Name, problem)
	}
	return s, nil
}

// streamProblem names the first setting of have the bridge cannot work with, against want; "" when none.
func streamProblem(have, want jetstream.StreamConfig) string {
	for _, subj := range want.Subjects {
		if !slices.Contains(have.Subjects, subj) {
			return fmt.Sprintf("subjects %v lack %s", have.Subjects, subj)
		}
	}
	switch {
	case have.Retention != want.Retention:
		return fmt.Sprintf("retention is %s, want %s", have.Retention, want.Retention)
	case have.Storage != want.Storage:
		return fmt.Sprintf("storage is %s, want %s", have.Storage, want.Storage)
	case have.Duplicates < want.Duplicates:
		return fmt.Sprintf("duplicate window is %v, want at least %v", have.Duplicates, want.Duplicates)
	case want.MaxMsgSize > 0 && have.MaxMsgSize > 0 && have.MaxMsgSize < want.MaxMsgSize:
		return fmt.Sprintf("max message size is %d, want at least %d", have.MaxMsgSize, want.MaxMsgSize)
	case want.MaxMsgsPerSubject > 0 && have.MaxMsgsPerSubject != want.MaxMsgsPerSubject:
		return fmt.Sprintf("messages per subject is %d, want %d", have.MaxMsgsPerSubject, want.MaxMsgsPerSubject)
	}
	return ""
}

// checkBucket opens a bucket and checks that it keeps one value per key.
func checkBucket(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, jetstream.StreamConfig, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, jetstream.StreamConfig{}, fmt.Errorf("%w: bucket %s: missing", ErrNotProvisioned, bucket)
	}
	if err != nil {
		return nil, jetstream.StreamConfig{}, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	cfg, err := jobsConfig(ctx, js, bucket) // the bucket's stream
	if err != nil {
		return nil, jetstream.StreamConfig{}, err
	}
	if cfg.MaxMsgsPerSubject != 1 {
		return nil, jetstream.StreamConfig{}, fmt.Errorf("%w: bucket %s: history %d, want 1", ErrNotProvisioned, bucket, cfg.MaxMsgsPerSubject)
	}
	return kv, cfg, nil
}

// checkJobs opens JOBS and its stream, checks them and returns its layout.
func checkJobs(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (jetstream.KeyValue, jetstream.Stream, int, error) {
	kv, cfg, err := checkBucket(ctx, js, want.Bucket)
	if err != nil {
		return nil, nil, 0, err
	}
	layout, err := knownLayout(want.Bucket, cfg.Metadata)
	if err != nil {
		return nil, nil, 0, err
	}
	if layout >= contract.LayoutHistory && (!cfg.AllowMsgTTL || cfg.SubjectDeleteMarkerTTL < time.Second) {
		return nil, nil, 0, fmt.Errorf("%w: bucket %s: layout %d needs per-message TTLs and delete markers (LimitMarkerTTL)",
			ErrNotProvisioned, want.Bucket, layout)
	}
	stream, err := js.Stream(ctx, contract.KVStream(want.Bucket))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("stream %s: %w", contract.KVStream(want.Bucket), err)
	}
	return kv, stream, layout, nil
}
