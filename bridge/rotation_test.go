package bridge

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ingest"
	"github.com/evershield/bridge/internal/natstest"
)

// TestRotationWebhookSecretsReachIngest: BRIDGE_WEBHOOK_TOKEN_PREVIOUS and BRIDGE_WEBHOOK_SECRET_PREVIOUS
// reach the ingest handler of a running bridge, so a webhook with the old token and the old signature is
// stored during a rotation, and one with neither is refused and not stored.
func TestRotationWebhookSecretsReachIngest(t *testing.T) {
	cfg := testConfig(t)
	cfg.Roles = []string{RoleIngest}
	cfg.WebhookToken, cfg.WebhookTokenPrevious = "new-token-2f9c", "old-token-7a1e"
	cfg.WebhookSecret, cfg.WebhookSecretPrevious = "new-signing-secret", "old-signing-secret"
	a := startApp(t, cfg, zerolog.New(zerolog.NewTestWriter(t)))
	_, js := natstest.Connect(t, cfg.NATSURL)

	post := func(t *testing.T, token, key, id string) int {
		t.Helper()
		body := `{"job_id":"` + id + `","status":"completed"}`
		req, err := http.NewRequestWithContext(natstest.Ctx(t), http.MethodPost,
			"http://"+a.Addr().String()+"/webhook/prompt?token="+token, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req.Header.Set(ingest.HeaderWebhookID, "msg_"+id)
		req.Header.Set(ingest.HeaderWebhookTimestamp, ts)
		req.Header.Set(ingest.HeaderWebhookSignature, ingest.Sign([]byte(key), "msg_"+id, ts, []byte(body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name, token, key, id string
		want                 int
	}{
		{"current token and secret", "new-token-2f9c", "new-signing-secret", "00000000-0000-4000-8000-000000000101", 200},
		{"previous token and secret", "old-token-7a1e", "old-signing-secret", "00000000-0000-4000-8000-000000000102", 200},
		{"neither token", "older-token-0000", "new-signing-secret", "00000000-0000-4000-8000-000000000103", 401},
		{"neither secret", "new-token-2f9c", "older-signing-secret", "00000000-0000-4000-8000-000000000104", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := post(t, tt.token, tt.key, tt.id); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
		})
	}
	var ids []string
	for _, m := range natstest.StreamMsgs(t, js, contract.Default.StreamWebhooks) {
		ids = append(ids, m.Header.Get("Nats-Msg-Id"))
	}
	if got, want := strings.Join(ids, " "), "00000000-0000-4000-8000-000000000101 00000000-0000-4000-8000-000000000102"; got != want {
		t.Fatalf("stored %q, want %q", got, want)
	}
}
