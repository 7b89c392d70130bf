package ingest

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

// TestStoredWebhookCarriesProvenanceAndDeliveryID: a signed webhook is stored with
// Bridge-Authenticated: signature and its delivery id (X-Omnifence-Delivery-Id, else webhook-id) in
// Bridge-Delivery-Id; a token-checked one with Bridge-Authenticated: token.
func TestStoredWebhookCarriesProvenanceAndDeliveryID(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	signed := newHarness(t, n.ClientURL(), Config{Secret: testSecret})
	createWebhooks(t, signed.js, 1)

	id1, id2 := uuid.NewString(), uuid.NewString()
	sr := sign(testSecretKey, webhookBody(id1), time.Now())
	if got := signed.postSignedWith(t, "/webhook/text", sr, map[string]string{contract.UpstreamHeaderDeliveryID: "wh_" + id1}); got.Status != http.StatusOK {
		t.Fatalf("signed webhook: %d %s", got.Status, got.Body)
	}
	sr = sign(testSecretKey, webhookBody(id2), time.Now())
	if got := signed.postSigned(t, "/webhook/text", sr); got.Status != http.StatusOK {
		t.Fatalf("signed webhook without delivery id: %d %s", got.Status, got.Body)
	}
	tokened := newHarness(t, n.ClientURL(), Config{Token: "tok"})
	id3 := uuid.NewString()
	if got := tokened.post(t, "/webhook/prompt?token=tok", webhookBody(id3)); got.Status != http.StatusOK {
		t.Fatalf("token webhook: %d %s", got.Status, got.Body)
	}

	want := map[string][2]string{
		id1: {contract.AuthenticatedSignature, "wh_" + id1},
		id2: {contract.AuthenticatedSignature, sr.id},
		id3: {contract.AuthenticatedToken, ""},
	}
	msgs := stored(t, signed.js)
	if len(msgs) != 3 {
		t.Fatalf("%d stored, want 3", len(msgs))
	}
	for _, m := range msgs {
		w := want[m.Header.Get(jetstream.MsgIDHeader)]
		if got := [2]string{m.Header.Get(contract.HeaderAuthenticated), m.Header.Get(contract.HeaderDeliveryID)}; got != w {
			t.Errorf("%s: authenticated, delivery id %q, want %q", m.Header.Get(jetstream.MsgIDHeader), got, w)
		}
	}
}

// TestOverloadedRefusesEarly: while Overloaded says so, a webhook is answered 503 with Retry-After and
// nothing is stored; afterwards the same webhook (the upstream's retry) is stored once.
func TestOverloadedRefusesEarly(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	var overloaded atomic.Bool
	overloaded.Store(true)
	hs := newHarness(t, n.ClientURL(), Config{Overloaded: overloaded.Load})
	createWebhooks(t, hs.js, 1)
	body := webhookBody(uuid.NewString())
	got := hs.post(t, "/webhook/text", body)
	if got.Status != http.StatusServiceUnavailable || got.Header.Get("Retry-After") != "1" {
		t.Fatalf("overloaded: %d Retry-After %q, want 503 and 1", got.Status, got.Header.Get("Retry-After"))
	}
	if n := len(stored(t, hs.js)); n != 0 || outcomes(hs.h, "overloaded") != 1 {
		t.Fatalf("%d stored, overloaded counted %v; want 0 and 1", n, outcomes(hs.h, "overloaded"))
	}
	overloaded.Store(false)
	for range 2 { // the retry, and a duplicate of it
		if got := hs.post(t, "/webhook/text", body); got.Status != http.StatusOK {
			t.Fatalf("after overload: %d %s", got.Status, got.Body)
		}
	}
	if n := len(stored(t, hs.js)); n != 1 {
		t.Fatalf("%d stored, want 1", n)
	}
}

// TestPressureFollowsTheStreamLimit: Pressure is high from HighWater of the stream's message limit on,
// and never for a stream without limits.
func TestPressureFollowsTheStreamLimit(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	ctx := natstest.Ctx(t)
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "P", Subjects: []string{"p.>"}, MaxMsgs: 10,
		Discard: jetstream.DiscardNew})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPressure(PressureConfig{HighWater: 0.5,
		Info: func(ctx context.Context) (*jetstream.StreamInfo, error) { return st.Info(ctx) }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if err := p.Check(ctx); err != nil {
			t.Fatal(err)
		}
		if want := i >= 5; p.High() != want {
			t.Fatalf("%d of 10 messages: high %v, want %v", i, p.High(), want)
		}
		if _, err := js.Publish(ctx, "p.x", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUnprovenBacklogBoundsForgedIDs pins issue 12 finding 6: without a token or secret, while the backlog
// of webhooks of unknown jobs is full, a webhook of a job the bridge does not track is refused (503 with
// Retry-After, nothing stored), and one of a known job is still taken; a configured token turns the
// bound off (a webhook with the token has provenance).
func TestUnprovenBacklogBoundsForgedIDs(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	known := uuid.NewString()
	var full atomic.Bool
	full.Store(true)
	hs := newHarness(t, n.ClientURL(), Config{UnprovenFull: full.Load, Known: func(id string) bool { return id == known }})
	createWebhooks(t, hs.js, 1)
	got := hs.post(t, "/webhook/prompt", webhookBody(uuid.NewString()))
	if got.Status != http.StatusServiceUnavailable || got.Header.Get("Retry-After") == "" || !strings.Contains(string(got.Body), "unknown_backlog") {
		t.Fatalf("unknown id while full: %d %s, want 503 unknown_backlog with Retry-After", got.Status, got.Body)
	}
	if got := hs.post(t, "/webhook/prompt", webhookBody(known)); got.Status != http.StatusOK {
		t.Fatalf("known job while full: %d %s, want 200", got.Status, got.Body)
	}
	if n := len(stored(t, hs.js)); n != 1 {
		t.Fatalf("%d stored, want 1 (the known job's)", n)
	}
	full.Store(false)
	if got := hs.post(t, "/webhook/prompt", webhookBody(uuid.NewString())); got.Status != http.StatusOK {
		t.Fatalf("unknown id after the backlog drained: %d", got.Status)
	}
	withToken := newHarness(t, n.ClientURL(), Config{Token: "tok", UnprovenFull: func() bool { return true }})
	if got := withToken.post(t, "/webhook/prompt?token=tok", webhookBody(uuid.NewString())); got.Status != http.StatusOK {
		t.Fatalf("token-carrying webhook: %d %s, want 200", got.Status, got.Body)
	}
}
