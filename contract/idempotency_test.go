package contract

import "testing"

// TestIdempotencyKeyNames pins the two names of an Idempotency-Key, both stored (the bucket key in
// BRIDGE_IDEMPOTENCY, the id in BRIDGE_HISTORY), so a change would lose every stored key: the hex
// sha256 of "prompt\norder-17", and its first 16 bytes written as a UUID.
func TestIdempotencyKeyNames(t *testing.T) {
	if got, want := IdempotencyKeyHash("prompt", "order-17"), "002c6f1d6ec34dc828c6262185ecf060a84200d8463aa9817cefd49529371add"; got != want {
		t.Errorf("IdempotencyKeyHash = %s, want %s", got, want)
	}
	if got, want := IdempotencyHistoryID("prompt", "order-17"), "002c6f1d-6ec3-4dc8-28c6-262185ecf060"; got != want {
		t.Errorf("IdempotencyHistoryID = %s, want %s", got, want)
	}
}
