package ops

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

// TestJobStatusWithNoBridgeSaysWhy: asked on a NATS server where no bridge serves jobs.status, the client
// says which role would, rather than only nats.go's "no responders".
func TestJobStatusWithNoBridgeSaysWhy(t *testing.T) {
	w := newWorld(t)
	_, err := JobStatus(natstest.CtxWithin(t, 10*time.Second), w.nc, contract.Names{}, uuid.NewString())
	if !errors.Is(err, nats.ErrNoResponders) || !strings.Contains(err.Error(), "no bridge with the submit role serves it") ||
		!strings.Contains(err.Error(), "jobs.status") {
		t.Fatalf("jobs.status with no bridge: %v; want no responders, naming the subject and the submit role", err)
	}
}
