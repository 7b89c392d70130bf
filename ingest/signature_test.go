package ingest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

var (
	testSecretKey = []byte("0123456789abcdef0123456789abcdef")
	testSecret    = "whsec_" + base64.StdEncoding.EncodeToString(testSecretKey)
)

// signedRequest is a webhook with Standard Webhooks headers; empty fields send no header.
type signedRequest struct {
	id, timestamp, signature string
	body                     string
}

// sign is a correctly signed webhook for body at time at.
func sign(key []byte, body string, at time.Time) signedRequest {
	id, ts := "msg_"+uuid.NewString(), strconv.FormatInt(at.Unix(), 10)
	return signedRequest{id: id, timestamp: ts, signature: Sign(key, id, ts, []byte(body)), body: body}
}

func (hs *harness) postSigned(t *testing.T, path string, sr signedRequest) response {
	t.Helper()
	return hs.postSignedWith(t, path, sr, nil)
}

// postSignedWith is postSigned with extra headers.
func (hs *harness) postSignedWith(t *testing.T, path string, sr signedRequest, extra map[string]string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(natstest.Ctx(t), http.MethodPost, hs.url+path, strings.NewReader(sr.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range map[string]string{HeaderWebhookID: sr.id, HeaderWebhookTimestamp: sr.timestamp, HeaderWebhookSignature: sr.signature} {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	resp, err := hs.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b.Bytes()}
}

func TestSignedWebhooks(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	hs := newHarness(t, n.ClientURL(), Config{Secret: testSecret})
	createWebhooks(t, hs.js, 1)
	now := time.Now()
	otherKey := []byte("another-secret-entirely")

	tests := []struct {
		name    string
		req     func(body string) signedRequest
		wantErr error
	}{
		{"valid", func(b string) signedRequest { return sign(testSecretKey, b, now) }, nil},
		{"valid second of two signatures", func(b string) signedRequest {
			sr := sign(testSecretKey, b, now)
			sr.signature = Sign(otherKey, sr.id, sr.timestamp, []byte(b)) + " " + sr.signature
			return sr
		}, nil},
		{"valid, timestamp 4 minutes old", func(b string) signedRequest { return sign(testSecretKey, b, now.Add(-4*time.Minute)) }, nil},
		{"no headers", func(b string) signedRequest { return signedRequest{body: b} }, ErrSignature},
		{"no signature", func(b string) signedRequest { sr := sign(testSecretKey, b, now); sr.signature = ""; return sr }, ErrSignature},
		{"no id", func(b string) signedRequest { sr := sign(testSecretKey, b, now); sr.id = ""; return sr }, ErrSignature},
		{"no timestamp", func(b string) signedRequest { sr := sign(testSecretKey, b, now); sr.timestamp = ""; return sr }, ErrSignature},
		{"wrong key", func(b string) signedRequest { return sign(otherKey, b, now) }, ErrSignature},
		{"body changed", func(b string) signedRequest {
			sr := sign(testSecretKey, b, now)
			sr.body = strings.Replace(b, `"is_prohibited":false`, `"is_prohibited":true`, 1)
			return sr
		}, ErrSignature},
		{"id changed", func(b string) signedRequest { sr := sign(testSecretKey, b, now); sr.id += "x"; return sr }, ErrSignature},
		{"timestamp changed", func(b string) signedRequest {
			sr := sign(testSecretKey, b, now)
			sr.timestamp = strconv.FormatInt(now.Unix()+1, 10)
			return sr
		}, ErrSignature},
		{"timestamp too old", func(b string) signedRequest { return sign(testSecretKey, b, now.Add(-6*time.Minute)) }, ErrSignature},
		{"timestamp in the future", func(b string) signedRequest { return sign(testSecretKey, b, now.Add(6*time.Minute)) }, ErrSignature},
		{"timestamp not a number", func(b string) signedRequest {
			sr := sign(testSecretKey, b, now)
			sr.timestamp = now.Format(time.RFC3339)
			sr.signature = Sign(testSecretKey, sr.id, sr.timestamp, []byte(b))
			return sr
		}, ErrSignature},
		{"timestamp absurd", func(b string) signedRequest {
			sr := sign(testSecretKey, b, now)
			sr.timestamp = "-9223372036854775808"
			sr.signature = Sign(testSecretKey, sr.id, sr.timestamp, []byte(b))
			return sr
		}, ErrSignature},
		{"unknown version", func(b string) signedRequest {
			sr := sign(testSecretKey, b, now)
			sr.signature = "v1a" + strings.TrimPrefix(sr.signature, "v1")
			return sr
		}, ErrSignature},
		{"not base64", func(b string) signedRequest { sr := sign(testSecretKey, b, now); sr.signature = "v1,!!!"; return sr }, ErrSignature},
		{"raw MAC without version", func(b string) signedRequest {
			sr := sign(testSecretKey, b, now)
			sr.signature = strings.TrimPrefix(sr.signature, "v1,")
			return sr
		}, ErrSignature},
	}
	accepted := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := hs.postSigned(t, "/webhook/prompt", tt.req(webhookBody(uuid.NewString())))
			if tt.wantErr == nil {
				if resp.Status != http.StatusOK {
					t.Fatalf("status %d %s, want 200", resp.Status, resp.Body)
				}
				accepted++
				return
			}
			wantCode := wantErrorCodes[tt.wantErr]
			var got errorBody
			if resp.Status != http.StatusUnauthorized || json.Unmarshal(resp.Body, &got) != nil || got.Error != wantCode {
				t.Fatalf("answer %d %s, want 401 %s", resp.Status, resp.Body, wantCode)
			}
			if strings.Contains(string(resp.Body), testSecret) {
				t.Fatalf("answer echoes the secret: %s", resp.Body)
			}
		})
	}
	if msgs := stored(t, hs.js); len(msgs) != accepted {
		t.Fatalf("%d messages stored, want the %d signed ones", len(msgs), accepted)
	}
	if got := outcomes(hs.h, "invalid_signature"); got == 0 {
		t.Error("invalid_signature not counted")
	}
}

func TestSignatureSecretForms(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	t.Run("raw secret", func(t *testing.T) {
		hs := newHarness(t, n.ClientURL(), Config{Secret: "plain-text-secret"})
		createWebhooks(t, hs.js, 1)
		body := webhookBody(uuid.NewString())
		if resp := hs.postSigned(t, "/webhook/image", sign([]byte("plain-text-secret"), body, time.Now())); resp.Status != 200 {
			t.Fatalf("raw secret: %d %s", resp.Status, resp.Body)
		}
	})
	t.Run("no secret ignores signatures", func(t *testing.T) {
		hs := newHarness(t, n.ClientURL(), Config{})
		sr := sign([]byte("whatever"), webhookBody(uuid.NewString()), time.Now().Add(-time.Hour))
		sr.signature = "v1,bogus"
		if resp := hs.postSigned(t, "/webhook/image", sr); resp.Status != 200 {
			t.Fatalf("unsigned mode: %d %s, want 200", resp.Status, resp.Body)
		}
	})
	t.Run("token and signature both required", func(t *testing.T) {
		hs := newHarness(t, n.ClientURL(), Config{Secret: testSecret, Token: testToken})
		body := webhookBody(uuid.NewString())
		if resp := hs.postSigned(t, "/webhook/image", sign(testSecretKey, body, time.Now())); resp.Status != 401 {
			t.Fatalf("signed without token: %d, want 401", resp.Status)
		}
		if resp := hs.postSigned(t, "/webhook/image?token="+testToken, sign(testSecretKey, body, time.Now())); resp.Status != 200 {
			t.Fatalf("signed with token: %d %s, want 200", resp.Status, resp.Body)
		}
	})
	t.Run("bad whsec secret is a config error", func(t *testing.T) {
		_, err := New(Config{Publisher: newGatePublisher(nil), Secret: "whsec_not*base64"})
		if !errors.Is(err, ErrInvalidConfig) || strings.Contains(err.Error(), "not*base64") {
			t.Fatalf("New = %v, want %v without the secret", err, ErrInvalidConfig)
		}
	})
}

// validHeaderValue reports whether net/http will send v as a header value.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return v == strings.TrimSpace(v)
}

// FuzzWebhookSignature sends arbitrary bodies and Standard Webhooks headers to a handler with a secret: it
// must not panic, a 200 needs a v1 signature that an independent HMAC check accepts for a fresh timestamp,
// and anything rejected publishes nothing.
func FuzzWebhookSignature(f *testing.F) {
	now := time.Now()
	for _, b := range []string{webhookBody(uuid.NewString()), `{"job_id":"` + uuid.NewString() + `"}`, `{}`, `not json`} {
		sr := sign(testSecretKey, b, now)
		f.Add(sr.body, sr.id, sr.timestamp, sr.signature)
		f.Add(sr.body+" ", sr.id, sr.timestamp, sr.signature)
		f.Add(sr.body, sr.id, sr.timestamp, "v1,"+strings.Repeat("A", 44)+" "+sr.signature)
		old := sign(testSecretKey, b, now.Add(-time.Hour))
		f.Add(old.body, old.id, old.timestamp, old.signature)
		f.Add(sr.body, "", "", "")
	}
	n := natstest.RunServer(f)
	hs := newHarness(f, n.ClientURL(), Config{Secret: testSecret, MaxBody: testMaxBody})
	createWebhooks(f, hs.js, 1)
	s, err := hs.js.Stream(natstest.Ctx(f), contract.Default.StreamWebhooks)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body, id, ts, sig string) {
		if !validHeaderValue(id) || !validHeaderValue(ts) || !validHeaderValue(sig) {
			t.Skip("not sendable as a header")
		}
		before, err := s.Info(natstest.Ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		resp := hs.postSigned(t, "/webhook/text", signedRequest{id: id, timestamp: ts, signature: sig, body: body})
		switch {
		case resp.Status == http.StatusOK:
			sec, err := strconv.ParseInt(ts, 10, 64)
			if err != nil || time.Since(time.Unix(sec, 0)).Abs() > DefaultSignatureTolerance+time.Minute {
				t.Fatalf("accepted timestamp %q", ts)
			}
			m := hmac.New(sha256.New, testSecretKey)
			m.Write([]byte(id + "." + ts + "." + body))
			want, ok := m.Sum(nil), false
			for _, s := range strings.Fields(sig) {
				if v, b64, _ := strings.Cut(s, ","); v == "v1" {
					got, err := base64.StdEncoding.DecodeString(b64)
					ok = ok || (err == nil && hmac.Equal(got, want))
				}
			}
			if !ok {
				t.Fatalf("accepted signature %q for id %q ts %q", sig, id, ts)
			}
		case resp.Status >= 400 && resp.Status < 500:
			after, err := s.Info(natstest.Ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if after.State.LastSeq != before.State.LastSeq {
				t.Fatalf("rejected (%d) but published", resp.Status)
			}
		default:
			t.Fatalf("status %d: %s", resp.Status, resp.Body)
		}
	})
}
