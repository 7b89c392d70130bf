package ingest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/evershield/bridge/internal/natstest"
)

// During a rotation the handler holds the new value as current and the old one as previous.
const (
	rotNewToken = "new-token-2f9c"
	rotOldToken = "old-token-7a1e"
)

var (
	rotNewKey    = []byte("new-signing-key-0123456789abcdef")
	rotOldKey    = []byte("old-signing-key-fedcba9876543210")
	rotNewSecret = "whsec_" + base64.StdEncoding.EncodeToString(rotNewKey)
	rotOldSecret = "whsec_" + base64.StdEncoding.EncodeToString(rotOldKey)
)

// storedIDs are the Nats-Msg-Id (job ids) of every message in WEBHOOKS, sorted.
func storedIDs(t *testing.T, hs *harness) []string {
	t.Helper()
	var ids []string
	for _, m := range stored(t, hs.js) {
		ids = append(ids, m.Header.Get("Nats-Msg-Id"))
	}
	slices.Sort(ids)
	return ids
}

// wantRefused fails unless resp is a 401 with the given error code that echoes none of secrets.
func wantRefused(t *testing.T, resp response, code string, secrets ...string) {
	t.Helper()
	var got errorBody
	if resp.Status != http.StatusUnauthorized || json.Unmarshal(resp.Body, &got) != nil || got.Error != code {
		t.Fatalf("answer %d %s, want 401 %s", resp.Status, resp.Body, code)
	}
	for _, s := range secrets {
		if strings.Contains(string(resp.Body), s) {
			t.Fatalf("answer echoes a secret: %s", resp.Body)
		}
	}
}

func TestRotationAcceptsPreviousToken(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	hs := newHarness(t, n.ClientURL(), Config{Token: rotNewToken, PreviousToken: rotOldToken})
	createWebhooks(t, hs.js, 1)

	tests := []struct {
		name, path, id string
		wantStatus     int
	}{
		{"current token", "/webhook/prompt?token=new-token-2f9c", "00000000-0000-4000-8000-000000000001", 200},
		{"previous token", "/webhook/prompt?token=old-token-7a1e", "00000000-0000-4000-8000-000000000002", 200},
		{"neither token", "/webhook/prompt?token=older-token-0000", "00000000-0000-4000-8000-000000000003", 401},
		{"no token", "/webhook/prompt", "00000000-0000-4000-8000-000000000004", 401},
		{"empty token", "/webhook/prompt?token=", "00000000-0000-4000-8000-000000000005", 401},
		{"previous token's prefix", "/webhook/prompt?token=old-token-7a1", "00000000-0000-4000-8000-000000000006", 401},
		{"both tokens joined", "/webhook/prompt?token=new-token-2f9cold-token-7a1e", "00000000-0000-4000-8000-000000000007", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := hs.post(t, tt.path, webhookBody(tt.id))
			if tt.wantStatus == 200 {
				if resp.Status != 200 {
					t.Fatalf("status %d %s, want 200", resp.Status, resp.Body)
				}
				return
			}
			wantRefused(t, resp, "unauthorized", rotNewToken, rotOldToken)
		})
	}
	want := []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"}
	if got := storedIDs(t, hs); !slices.Equal(got, want) {
		t.Fatalf("stored %v, want only %v", got, want)
	}
}

func TestRotationAcceptsPreviousSecret(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	hs := newHarness(t, n.ClientURL(), Config{Secret: rotNewSecret, PreviousSecret: rotOldSecret})
	createWebhooks(t, hs.js, 1)
	now := time.Now()
	otherKey := []byte("neither-key-of-the-rotation")

	tests := []struct {
		name       string
		id         string
		req        func(body string) signedRequest
		wantStatus int
	}{
		{"current secret", "00000000-0000-4000-8000-000000000011",
			func(b string) signedRequest { return sign(rotNewKey, b, now) }, 200},
		{"previous secret", "00000000-0000-4000-8000-000000000012",
			func(b string) signedRequest { return sign(rotOldKey, b, now) }, 200},
		{"other then previous", "00000000-0000-4000-8000-000000000013", func(b string) signedRequest {
			sr := sign(rotOldKey, b, now)
			sr.signature = Sign(otherKey, sr.id, sr.timestamp, []byte(b)) + " " + sr.signature
			return sr
		}, 200},
		{"neither secret", "00000000-0000-4000-8000-000000000014",
			func(b string) signedRequest { return sign(otherKey, b, now) }, 401},
		{"previous secret, body changed", "00000000-0000-4000-8000-000000000015", func(b string) signedRequest {
			sr := sign(rotOldKey, b, now)
			sr.body = strings.Replace(b, `"is_prohibited":false`, `"is_prohibited":true`, 1)
			return sr
		}, 401},
		{"previous secret, too old", "00000000-0000-4000-8000-000000000016",
			func(b string) signedRequest { return sign(rotOldKey, b, now.Add(-6*time.Minute)) }, 401},
		{"no signature", "00000000-0000-4000-8000-000000000017",
			func(b string) signedRequest { return signedRequest{body: b} }, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := hs.postSigned(t, "/webhook/text", tt.req(webhookBody(tt.id)))
			if tt.wantStatus == 200 {
				if resp.Status != 200 {
					t.Fatalf("status %d %s, want 200", resp.Status, resp.Body)
				}
				return
			}
			wantRefused(t, resp, "invalid_signature", rotNewSecret, rotOldSecret)
		})
	}
	want := []string{"00000000-0000-4000-8000-000000000011", "00000000-0000-4000-8000-000000000012",
		"00000000-0000-4000-8000-000000000013"}
	if got := storedIDs(t, hs); !slices.Equal(got, want) {
		t.Fatalf("stored %v, want only %v", got, want)
	}
}

// TestRotationPreviousNeedsCurrent: a previous value without a current one would let the old secret in
// and refuse the new; New refuses the configuration, naming the field and never the value.
func TestRotationPreviousNeedsCurrent(t *testing.T) {
	pub := newGatePublisher(nil)
	tests := []struct {
		name    string
		cfg     Config
		wantMsg string
	}{
		{"previous token alone", Config{Publisher: pub, PreviousToken: rotOldToken},
			"ingest: invalid config: PreviousToken: set without Token"},
		{"previous secret alone", Config{Publisher: pub, PreviousSecret: rotOldSecret},
			"ingest: invalid config: PreviousSecret: set without Secret"},
		{"previous secret not base64", Config{Publisher: pub, Secret: rotNewSecret, PreviousSecret: "whsec_old*secret"},
			"ingest: invalid config: PreviousSecret: a whsec_ secret must be followed by standard base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) || err.Error() != tt.wantMsg {
				t.Fatalf("New = %v, want %q", err, tt.wantMsg)
			}
		})
	}
	if _, err := New(Config{Publisher: pub, Token: rotNewToken, PreviousToken: rotOldToken,
		Secret: rotNewSecret, PreviousSecret: rotOldSecret}); err != nil {
		t.Fatalf("a full rotation config: %v", err)
	}
}

// TestRotationTokenCheckAllocatesNothing: checking ?token= against the current and the previous token
// stays off the heap, on the hot path of every webhook.
func TestRotationTokenCheckAllocatesNothing(t *testing.T) {
	h, err := New(Config{Publisher: newGatePublisher(nil), Token: rotNewToken, PreviousToken: rotOldToken})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { h.tokenOK(rotOldToken) }); n != 0 {
		t.Fatalf("token check: %v allocations, want 0", n)
	}
}
