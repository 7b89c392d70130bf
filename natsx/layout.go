package natsx

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
)

// OldestServer is the oldest nats-server this release runs on: JOBS at [contract.LayoutHistory] allows
// per-message TTLs (JetStream API level 1), and the result fence expects the last sequence of a subject
// other than the one it publishes to (Nats-Expected-Last-Subject-Sequence-Subject); both came with 2.11.
const OldestServer = "2.11.0"

// jobsMarkerTTL is how long JOBS keeps the marker of a record that aged out (the bucket's TTL, when
// BRIDGE_JOBS_RETENTION sets one), so that watchers see it go: the bucket's LimitMarkerTTL.
const jobsMarkerTTL = time.Minute

// atLayout is the JOBS bucket configuration for layout: from [contract.LayoutHistory] on, with per-message
// TTLs (LimitMarkerTTL), which no process of an earlier release can turn off again, so its start-up stops.
// metadata is the bucket's existing metadata, kept.
func atLayout(want jetstream.KeyValueConfig, layout int, metadata map[string]string) jetstream.KeyValueConfig {
	if layout >= contract.LayoutHistory {
		want.LimitMarkerTTL = jobsMarkerTTL
		want.Metadata = contract.LayoutMetadata(metadata, layout)
	} else {
		want.Metadata = metadata
	}
	return want
}

// ensureJobs creates JOBS at [contract.Layout], or updates an existing bucket to want at the layout it
// is at: a bucket of the earlier layout stays so until [UpgradeLayout], so that the earlier release can
// run beside this one and a rollback stays possible. A layout newer than this release's stops start-up.
func ensureJobs(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (jetstream.KeyValue, int, error) {
	kv, err := js.CreateKeyValue(ctx, atLayout(want, contract.Layout, nil))
	if err == nil {
		return kv, contract.Layout, nil
	}
	if !errors.Is(err, jetstream.ErrBucketExists) {
		return nil, 0, fmt.Errorf("create bucket %s: %w", want.Bucket, err)
	}
	cfg, err := jobsConfig(ctx, js, want.Bucket)
	if err != nil {
		return nil, 0, err
	}
	layout, err := knownLayout(want.Bucket, cfg.Metadata)
	if err != nil {
		return nil, 0, err
	}
	kv, err = js.UpdateKeyValue(ctx, atLayout(want, layout, cfg.Metadata))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: bucket %s: update: %v", ErrIncompatible, want.Bucket, err)
	}
	return kv, layout, nil
}

// jobsConfig reads the configuration of the stream of the JOBS bucket called bucket.
func jobsConfig(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.StreamConfig, error) {
	name := contract.KVStream(bucket)
	s, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamConfig{}, fmt.Errorf("stream %s: %w", name, err)
	}
	return s.CachedInfo().Config, nil
}

// knownLayout is the layout of JOBS's metadata, or an error naming bucket when this release does not know
// it.
func knownLayout(bucket string, metadata map[string]string) (int, error) {
	layout := contract.LayoutOf(metadata)
	if layout < 1 || layout > contract.Layout {
		return 0, fmt.Errorf("%w: bucket %s is at layout %q (metadata %s), newer than this release knows (%d): run the release that upgraded it, or a newer one",
			ErrIncompatible, bucket, metadata[contract.LayoutKey], contract.LayoutKey, contract.Layout)
	}
	return layout, nil
}

// checkServer stops start-up on a server older than [OldestServer]: one whose JetStream API level is 0.
func checkServer(ctx context.Context, js jetstream.JetStream) error {
	info, err := js.AccountInfo(ctx)
	if err != nil {
		return fmt.Errorf("jetstream account info: %w", err)
	}
	if info.API.Level < 1 {
		return fmt.Errorf("%w: nats-server %s is older than %s, the oldest this release runs on", ErrServerTooOld,
			js.Conn().ConnectedServerVersion(), OldestServer)
	}
	return nil
}

// UpgradeLayout moves the state to [contract.Layout] and returns the layout it was at. From then on the
// compactor moves delivered jobs into the history, and processes of an earlier release no longer start
// (their update of JOBS is refused). Run it once no process of an earlier release runs: one that still
// runs would take a re-posted webhook of a compacted job for a new one. Idempotent. names are the
// bridge's (its namespace's).
func UpgradeLayout(ctx context.Context, js jetstream.JetStream, names contract.Names) (int, error) {
	cfg, err := jobsConfig(ctx, js, names.BucketJobs)
	if err != nil {
		return 0, err
	}
	from, err := knownLayout(names.BucketJobs, cfg.Metadata)
	if err != nil || from == contract.Layout {
		return from, err
	}
	cfg.AllowMsgTTL = true
	if cfg.SubjectDeleteMarkerTTL == 0 {
		cfg.SubjectDeleteMarkerTTL = jobsMarkerTTL
	}
	cfg.Metadata = contract.LayoutMetadata(cfg.Metadata, contract.Layout)
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return from, fmt.Errorf("upgrade %s to layout %d: %w", names.BucketJobs, contract.Layout, err)
	}
	return from, nil
}

// JobsLayout reads the layout JOBS is at now, for a running process to learn of an [UpgradeLayout]; jobs
// is the bucket's stream.
func JobsLayout(ctx context.Context, jobs jetstream.Stream) (int, error) {
	info, err := jobs.Info(ctx)
	if err != nil {
		return 0, err
	}
	bucket, _ := contract.KVBucket(info.Config.Name)
	return knownLayout(bucket, info.Config.Metadata)
}
