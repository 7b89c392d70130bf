package submit

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/testworld"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestInterruptedSubmissionIsReported pins issue 11's crash window between the upstream's answer and the
// JOBS write: a process that stopped there leaves its intent (and, with an Idempotency-Key, a reserved
// key) behind. The intent is counted in bridge_submit_unresolved_intents, and a caller who retries with
// the same key gets a clear IDEMPOTENCY_INTERRUPTED instead of waiting for the key's TTL. A submission that
// completes leaves no intent.
func TestInterruptedSubmissionIsReported(t *testing.T) {
	e := newEnv(t, testworld.Single, simulator.Config{})
	ctx := natstest.CtxWithin(t, 30*time.Second)
	long := time.Now().Add(-10 * time.Minute).UTC()
	// What a process that stopped mid-submission leaves.
	b, _ := json.Marshal(Intent{Modality: "prompt", At: long, KeyHash: idemKey("prompt", "order-7")})
	if _, err := e.Res.Idempotency.Put(ctx, IntentPrefix+"crashed", b); err != nil {
		t.Fatal(err)
	}
	r, _ := json.Marshal(idemEntry{State: idemReserved, At: long})
	if _, err := e.Res.Idempotency.Put(ctx, idemKey("prompt", "order-7"), r); err != nil {
		t.Fatal(err)
	}
	s := e.startSubmitter(func(c *Config) { c.IntentScan = 100 * time.Millisecond })

	natstest.WaitFor(t, 10*time.Second, func() error {
		if v := testutil.ToFloat64(s.metrics.unresolved); v != 1 {
			return fmt.Errorf("unresolved intents %v, want 1", v)
		}
		return nil
	})
	msg := e.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"again"}`), map[string]string{HeaderIdempotencyKey: "order-7"})
	if code, desc := msg.Header.Get(micro.ErrorCodeHeader), msg.Header.Get(micro.ErrorHeader); code != "409" ||
		!strings.HasPrefix(desc, "IDEMPOTENCY_INTERRUPTED") {
		t.Fatalf("retry with the interrupted key: %s %s, want 409 IDEMPOTENCY_INTERRUPTED", code, desc)
	}

	// A submission that completes leaves no intent behind.
	ok := e.Request(contract.Default.SubjectSubmit+"prompt", []byte(`{"prompt":"fine"}`), nil)
	if code := ok.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("submission: %s %s", code, ok.Header.Get(micro.ErrorHeader))
	}
	natstest.WaitFor(t, 5*time.Second, func() error {
		lister, err := e.Res.Idempotency.ListKeysFiltered(ctx, IntentPrefix+">")
		if err != nil {
			return err
		}
		n := 0
		for range lister.Keys() {
			n++
		}
		if n != 1 {
			return errors.New("intents other than the crashed one are left")
		}
		return nil
	})
}
