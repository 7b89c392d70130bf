package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/jobs"
)

// watchProbeEvery is the probe period of the tests' watchers; the bridge's is its poll interval, at most 5 s.
const watchProbeEvery = 200 * time.Millisecond

// watched is a running Watcher of a store, with a subscriber that counts the kinds it was fed.
type watched struct {
	*jobs.Watcher
	mu    sync.Mutex // mu guards kinds
	kinds map[jobs.UpdateKind]int
}

func startWatcher(t *testing.T, store *jobs.Store) *watched {
	t.Helper()
	w := &watched{Watcher: jobs.NewWatcher(store.KV(), watchProbeEvery, zerolog.New(zerolog.NewTestWriter(t))),
		kinds: map[jobs.UpdateKind]int{}}
	w.Subscribe(func(u jobs.Update) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.kinds[u.Kind]++
	})
	testworld.Run(t, "watcher", w.Run)
	return w
}

func (w *watched) fed(k jobs.UpdateKind) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.kinds[k]
}

// waitPending waits until the watcher is ready and its pending set is exactly ids.
func (w *watched) waitPending(t *testing.T, timeout time.Duration, ids ...string) {
	t.Helper()
	natstest.RecvWithin(t, w.Ready(), timeout)
	natstest.WaitFor(t, timeout, func() error {
		if w.Count() != len(ids) {
			return fmt.Errorf("%d pending; want %d", w.Count(), len(ids))
		}
		for _, id := range ids {
			if !w.Has(id) {
				return fmt.Errorf("job %s not pending", id)
			}
		}
		return nil
	})
}

func watchedID(i int) string { return fmt.Sprintf("7b0c1d2e-0000-4000-8000-%012d", i) }

// TestWatcherKeepsTheAccountsPendingJobs: the pending set counts records already there when the watcher
// starts and follows creates, deliveries and deletes; a subscriber is fed one replay and every record.
func TestWatcherKeepsTheAccountsPendingJobs(t *testing.T) {
	w := newWorld(t)
	ctx := natstest.CtxWithin(t, 30*time.Second)
	for i := range 3 {
		if _, err := w.Store.Create(ctx, jobs.Record{JobID: watchedID(i), Modality: "prompt", State: jobs.StatePending}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Store.Create(ctx, jobs.Record{JobID: watchedID(9), Modality: "prompt", State: jobs.StateDelivered}); err != nil {
		t.Fatal(err)
	}
	jw := startWatcher(t, w.Store)
	jw.waitPending(t, 10*time.Second, watchedID(0), watchedID(1), watchedID(2))
	if jw.Has(watchedID(9)) {
		t.Fatal("a delivered job counts as pending")
	}
	if _, err := w.Store.Create(ctx, jobs.Record{JobID: watchedID(4), Modality: "image", State: jobs.StatePending}); err != nil {
		t.Fatal(err)
	}
	jw.waitPending(t, 10*time.Second, watchedID(0), watchedID(1), watchedID(2), watchedID(4))
	if _, err := w.Store.Update(ctx, watchedID(0), func(r *jobs.Record) (bool, error) { r.State = jobs.StateDelivered; return true, nil }); err != nil {
		t.Fatal(err)
	}
	jw.waitPending(t, 10*time.Second, watchedID(1), watchedID(2), watchedID(4))
	if err := w.Store.KV().Delete(ctx, watchedID(1)); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	jw.waitPending(t, 10*time.Second, watchedID(2), watchedID(4))
	if r, c, n := jw.fed(jobs.UpdateReplay), jw.fed(jobs.UpdateCaughtUp), jw.fed(jobs.UpdateRecord); r != 1 || c != 1 || n != 7 {
		t.Fatalf("subscriber fed %d replays, %d caught up, %d records; want 1, 1, 7", r, c, n)
	}
}

// TestWatcherFollowsAcrossRestart covers the watch's probe across a NATS restart (issue 12): a job
// recorded after the node comes back is pending within 5 s. Without the probe it reached the watcher only
// when nats.go recreated the watch's consumer after two missed 5 s heartbeats, 10 to 20 s late.
func TestWatcherFollowsAcrossRestart(t *testing.T) {
	w := newWorld(t)
	ctx := natstest.CtxWithin(t, time.Minute)
	store := w.Store
	if _, err := store.Create(ctx, jobs.Record{JobID: watchedID(1), Modality: "prompt", State: jobs.StatePending}); err != nil {
		t.Fatal(err)
	}
	jw := startWatcher(t, store)
	jw.waitPending(t, 10*time.Second, watchedID(1))

	w.Node.Restart(t)
	natstest.WaitFor(t, 10*time.Second, func() error {
		_, err := store.Create(ctx, jobs.Record{JobID: watchedID(2), Modality: "prompt", State: jobs.StatePending})
		if errors.Is(err, jobs.ErrExists) {
			return nil // an earlier try was stored, its answer lost
		}
		return err
	})
	jw.waitPending(t, 5*time.Second, watchedID(1), watchedID(2))
}

// TestWatcherReopensWhenBucketRecreated covers the watch's probe when JOBS is deleted and made again
// (issue 12): the pending set is rebuilt from the new bucket, and subscribers are fed a second replay.
// Without the probe the watch's consumer resumed past the new stream's sequences: the old job stayed
// pending and the new one never came.
func TestWatcherReopensWhenBucketRecreated(t *testing.T) {
	w := newWorld(t)
	ctx := natstest.CtxWithin(t, time.Minute)
	if _, err := w.Store.Create(ctx, jobs.Record{JobID: watchedID(1), Modality: "prompt", State: jobs.StatePending}); err != nil {
		t.Fatal(err)
	}
	jw := startWatcher(t, w.Store)
	jw.waitPending(t, 10*time.Second, watchedID(1))

	if err := w.JS.DeleteKeyValue(ctx, contract.Default.BucketJobs); err != nil {
		t.Fatal(err)
	}
	w.Provision()
	if _, err := jobs.NewStore(w.Res.Jobs).Create(ctx, jobs.Record{JobID: watchedID(2), Modality: "prompt", State: jobs.StatePending}); err != nil {
		t.Fatal(err)
	}
	jw.waitPending(t, 5*time.Second, watchedID(2))
	if n := jw.fed(jobs.UpdateReplay); n < 2 {
		t.Fatalf("subscriber fed %d replays, want a second one for the new bucket", n)
	}
	if jw.fed(jobs.UpdateLost) < 1 {
		t.Fatal("subscriber not told the watch was lost")
	}
}
