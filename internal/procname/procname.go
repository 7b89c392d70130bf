// Package procname names a bridge process among the others on the same NATS: in the shared budget's
// usage reports and the reconciler's lease.
package procname

import (
	"crypto/rand"
	"encoding/hex"
	"os"
)

// New returns the host name and a random suffix, so restarts and replicas never share a name.
func New() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "bridge"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
