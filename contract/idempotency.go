package contract

import (
	"crypto/sha256"
	"encoding/hex"
)

// IdempotencyKeyHash is the key in BRIDGE_IDEMPOTENCY of a submission's Idempotency-Key: the hex sha256 of
// the modality (the submit endpoint's), a newline and the key. A hash, so any header value makes a valid
// KV key and the same key used for two modalities names two entries.
func IdempotencyKeyHash(modality, key string) string {
	sum := sha256.Sum256([]byte(modality + "\n" + key))
	return hex.EncodeToString(sum[:])
}

// IdempotencyHistoryID is the id under which the history keeps an Idempotency-Key once its job is
// compacted: the first 16 bytes of the key's sha256 ([IdempotencyKeyHash]), written as a UUID so that the
// history stores it as it stores a job id. Its entry has the job's delivery time and RESULTS sequence.
func IdempotencyHistoryID(modality, key string) string {
	h := IdempotencyKeyHash(modality, key)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
