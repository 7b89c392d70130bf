package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (https://www.standardwebhooks.com) headers, with which the newer upstream contract signs
// its webhooks. The signature is "v1,<base64 HMAC-SHA256 of id.timestamp.body>"; webhook-signature may carry
// several, separated by spaces (during a secret rotation).
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// DefaultSignatureTolerance is how far webhook-timestamp may be from the bridge's clock, either way, unless
// Config.SignatureTolerance says otherwise (the Standard Webhooks recommendation, and the upstream's).
const DefaultSignatureTolerance = 5 * time.Minute

// secretPrefix marks a Standard Webhooks secret whose key is the base64 after it.
const secretPrefix = "whsec_"

// maxSignatures bounds the signatures of one webhook-signature header that are checked.
const maxSignatures = 8

// ParseSecret turns a webhook secret into the HMAC key: "whsec_<base64>" is the base64-decoded bytes, any
// other value is used as is. The error never contains the secret.
func ParseSecret(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(rest)
	}
	if err != nil || len(key) == 0 {
		return nil, errors.New("a whsec_ secret must be followed by standard base64")
	}
	return key, nil
}

// Sign returns the webhook-signature value ("v1,<base64>") of body for the given key, webhook-id and
// webhook-timestamp; tests and the upstream simulator use it to sign as the upstream does.
func Sign(key []byte, id, timestamp string, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, timestamp, body))
}

func mac(key []byte, id, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// signedHeaders are the Standard Webhooks headers of one request, checked for presence and freshness
// before the body is checked.
type signedHeaders struct {
	id, timestamp string
	signatures    []string
}

// checkSignatureHeaders requires the three headers and a webhook-timestamp within tol of now.
func checkSignatureHeaders(h http.Header, now time.Time, tol time.Duration) (signedHeaders, error) {
	sh := signedHeaders{id: h.Get(HeaderWebhookID), timestamp: h.Get(HeaderWebhookTimestamp)}
	sig := h.Get(HeaderWebhookSignature)
	if sh.id == "" || sh.timestamp == "" || sig == "" {
		return sh, fmt.Errorf("%w: %s, %s and %s headers are required", ErrSignature,
			HeaderWebhookID, HeaderWebhookTimestamp, HeaderWebhookSignature)
	}
	ts, err := strconv.ParseInt(sh.timestamp, 10, 64)
	if err != nil {
		return sh, fmt.Errorf("%w: %s is not unix seconds", ErrSignature, HeaderWebhookTimestamp)
	}
	// Compare in seconds: time.Unix of an absurd value would overflow a Duration.
	if d := now.Unix() - ts; d > int64(tol/time.Second) || -d > int64(tol/time.Second) {
		return sh, fmt.Errorf("%w: %s is more than %v away from now", ErrSignature, HeaderWebhookTimestamp, tol)
	}
	sh.signatures = strings.Fields(sig)
	if len(sh.signatures) > maxSignatures {
		sh.signatures = sh.signatures[:maxSignatures]
	}
	return sh, nil
}

// verify reports whether one of the v1 signatures is the HMAC of body under key or, during a rotation,
// under previous (nil outside one). Every signature is compared with each key's HMAC in constant time and
// without stopping at a match, so the time taken tells no key from the other.
func (sh signedHeaders) verify(body, key, previous []byte) error {
	want := mac(key, sh.id, sh.timestamp, body)
	var wantPrev []byte // the second HMAC is paid for during a rotation only
	if previous != nil {
		wantPrev = mac(previous, sh.id, sh.timestamp, body)
	}
	match := 0
	for _, s := range sh.signatures {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		match |= subtle.ConstantTimeCompare(got, want)
		if previous != nil {
			match |= subtle.ConstantTimeCompare(got, wantPrev)
		}
	}
	if match != 1 {
		return fmt.Errorf("%w: no valid v1 signature", ErrSignature)
	}
	return nil
}
