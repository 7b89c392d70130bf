package simulator_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/upstream/simulator"
)

// TestWebhookSignedWhenSecretSet: with WebhookSecret the simulator signs as Standard Webhooks says, which an
// independent HMAC check confirms; without it, no signature headers are sent.
func TestWebhookSignedWhenSecretSet(t *testing.T) {
	key := []byte("sim-signing-key")
	for _, tt := range []struct {
		name, secret string
	}{
		{"whsec", "whsec_" + base64.StdEncoding.EncodeToString(key)},
		{"raw", string(key)},
		{"unsigned", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan http.Header, 1)
			bodies := make(chan []byte, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got <- r.Header.Clone()
				bodies <- b
			}))
			t.Cleanup(srv.Close)
			sim := simtest.Run(t, simulator.Config{WebhookSecret: tt.secret})
			c := simtest.Client(t, sim)
			if _, err := c.Submit(natstest.Ctx(t), "prompt", map[string]string{"prompt": "hello"}, srv.URL+"/webhook/prompt"); err != nil {
				t.Fatal(err)
			}
			var h http.Header
			select {
			case h = <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("no webhook within 10s")
			}
			body := <-bodies
			if tt.secret == "" {
				if h.Get("webhook-signature") != "" || h.Get("webhook-id") != "" {
					t.Fatalf("unsigned simulator sent signature headers %v", h)
				}
				return
			}
			id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
			sec, err := strconv.ParseInt(ts, 10, 64)
			if id == "" || err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
				t.Fatalf("webhook-id %q webhook-timestamp %q", id, ts)
			}
			m := hmac.New(sha256.New, key)
			m.Write([]byte(id + "." + ts + "." + string(body)))
			if want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)); h.Get("webhook-signature") != want {
				t.Fatalf("webhook-signature %q, want %q", h.Get("webhook-signature"), want)
			}
		})
	}
	if _, err := simulator.New(simulator.Config{WebhookSecret: "whsec_***"}); err == nil {
		t.Fatal("a whsec_ secret that is not base64 was accepted")
	}
}
