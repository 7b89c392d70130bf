package simulator

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
)

// TestJobRetentionForgetsOldFinishedJobs: with JobRetention set, finished jobs created longer ago are
// forgotten at the next eviction, while running and recent jobs stay.
func TestJobRetentionForgetsOldFinishedJobs(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := New(Config{JobRetention: time.Minute, Now: clock, QueueDelay: -1, ProcessDelay: -1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)

	stuck := s.create(s.keys[DefaultKey], newJob{typ: "prompt", marks: "sim:hold"})
	var old []*job
	for range evictEvery - 1 {
		old = append(old, s.create(s.keys[DefaultKey], newJob{typ: "prompt"}))
	}
	natstest.WaitFor(t, 10*time.Second, func() error {
		s.mu.RLock()
		defer s.mu.RUnlock()
		for _, j := range old {
			if j.status != statusCompleted && j.status != statusFailed {
				return fmt.Errorf("job %s is %s", j.id, j.status)
			}
		}
		return nil
	})
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	for range evictEvery { // the last of these triggers an eviction
		s.create(s.keys[DefaultKey], newJob{typ: "prompt"})
	}

	if _, ok := s.Job(old[0].id); ok {
		t.Errorf("an old finished job is still kept")
	}
	if _, ok := s.Job(stuck.id); !ok {
		t.Errorf("an old job still running was forgotten")
	}
	if n := len(s.Jobs()); n != evictEvery+1 {
		t.Errorf("%d jobs kept, want %d (the new ones and the one still running)", n, evictEvery+1)
	}
}
