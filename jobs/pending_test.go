package jobs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/internal/natstest"
)

// TestPendingCountsTheAccountsOwedJobs: the ledger counts records already there when it starts and
// follows creates, deliveries and deletes.
func TestPendingCountsTheAccountsOwedJobs(t *testing.T) {
	w := newWorld(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := func(i int) string { return fmt.Sprintf("7b0c1d2e-0000-4000-8000-%012d", i) }
	for i := range 3 {
		if _, err := w.store.Create(ctx, Record{JobID: id(i), Modality: "prompt", State: StatePending}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.store.Create(ctx, Record{JobID: id(9), Modality: "prompt", State: StateDelivered}); err != nil {
		t.Fatal(err)
	}
	p := NewPending(w.store.KV(), zerolog.New(zerolog.NewTestWriter(t)))
	go p.Run(ctx)
	want := func(n int) {
		t.Helper()
		natstest.WaitFor(t, 10*time.Second, func() error {
			if !p.Ready() || p.Count() != n {
				return fmt.Errorf("ready %v, %d pending; want %d", p.Ready(), p.Count(), n)
			}
			return nil
		})
	}
	want(3)
	if !p.Has(id(0)) || p.Has(id(9)) {
		t.Fatal("Has disagrees with the records")
	}
	if _, err := w.store.Create(ctx, Record{JobID: id(4), Modality: "image", State: StatePending}); err != nil {
		t.Fatal(err)
	}
	want(4)
	if _, err := w.store.Update(ctx, id(0), func(r *Record) (bool, error) { r.State = StateDelivered; return true, nil }); err != nil {
		t.Fatal(err)
	}
	want(3)
	if err := w.store.KV().Delete(ctx, id(1)); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	want(2)
}
