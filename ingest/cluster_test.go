package ingest

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

// TestNoAckedWebhookLostAcrossNodeFailure runs ingest against a 3-node cluster with an R3 WEBHOOKS stream,
// takes down in turn a node that does not lead the stream, the stream leader and the node the client is
// connected to, and checks that ingest
// keeps accepting while each is down and that every acknowledged webhook is stored exactly once on every
// node afterwards.
func TestNoAckedWebhookLostAcrossNodeFailure(t *testing.T) {
	t.Parallel()
	c := natstest.RunCluster(t, 3)
	hs := newHarness(t, c.URLs(), Config{})
	createWebhooks(t, hs.js, 3)

	acked := map[string]bool{}     // answered 2xx
	attempted := map[string]bool{} // sent, whatever the answer
	send := func(t *testing.T, count int) {
		t.Helper()
		for range count {
			id := uuid.NewString()
			attempted[id] = true
			resp := hs.post(t, "/webhook/prompt", webhookBody(id))
			if resp.Status != http.StatusOK {
				t.Fatalf("webhook %s: %d %s", id, resp.Status, resp.Body)
			}
			acked[id] = true
		}
	}
	// settle waits until ingest accepts again after a node went down: the client may have to reconnect and
	// the stream may have to elect a leader, which takes seconds with production Raft timings. Webhooks
	// answered 503 meanwhile are not acked and may or may not be stored.
	settle := func(t *testing.T) {
		t.Helper()
		natstest.WaitFor(t, 60*time.Second, func() error {
			id := uuid.NewString()
			attempted[id] = true
			resp := hs.post(t, "/webhook/prompt", webhookBody(id))
			if resp.Status != http.StatusOK {
				return fmt.Errorf("probe answered %d %s", resp.Status, resp.Body)
			}
			acked[id] = true
			return nil
		})
	}
	streamLeader := func(t *testing.T) *natstest.Node {
		t.Helper()
		var leader *natstest.Node
		natstest.WaitFor(t, 30*time.Second, func() error {
			for _, n := range c {
				if n.Running() && n.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, contract.Default.StreamWebhooks) {
					leader = n
					return nil
				}
			}
			return fmt.Errorf("no leader of stream %s", contract.Default.StreamWebhooks)
		})
		return leader
	}

	send(t, 20)
	t.Run("non-leader down", func(t *testing.T) {
		leader := streamLeader(t)
		var victim *natstest.Node
		for _, n := range c {
			if n != leader {
				victim = n
				break
			}
		}
		victim.Stop()
		settle(t)
		send(t, 20)
		victim.Restart(t)
	})
	t.Run("stream leader down", func(t *testing.T) {
		leader := streamLeader(t)
		leader.Stop()
		settle(t)
		send(t, 20)
		leader.Restart(t)
	})
	t.Run("client's node down", func(t *testing.T) {
		var victim *natstest.Node
		for _, n := range c {
			if n.Name() == hs.nc.ConnectedServerName() {
				victim = n
			}
		}
		if victim == nil {
			t.Fatalf("client connected to %q, not a cluster node", hs.nc.ConnectedServerName())
		}
		victim.Stop()
		settle(t)
		send(t, 20)
		victim.Restart(t)
	})
	send(t, 10)

	ids := map[string]bool{}
	for _, m := range stored(t, hs.js) {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if ids[id] {
			t.Errorf("job %s stored twice", id)
		}
		if !attempted[id] {
			t.Errorf("job %s stored but never sent", id)
		}
		ids[id] = true
	}
	for id := range acked {
		if !ids[id] {
			t.Errorf("acknowledged job %s missing from the stream", id)
		}
	}
	t.Logf("%d acked, %d sent, %d stored", len(acked), len(attempted), len(ids))
	// Every replica, the restarted ones included, catches up to the same count.
	for _, n := range c {
		natstest.WaitFor(t, 30*time.Second, func() error {
			acc, err := n.JszAccount(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true})
			if err != nil {
				return err
			}
			for _, sd := range acc.Streams {
				if sd.Name == contract.Default.StreamWebhooks {
					if sd.State.Msgs != uint64(len(ids)) {
						return fmt.Errorf("node %s holds %d messages, want %d", n.Name(), sd.State.Msgs, len(ids))
					}
					return nil
				}
			}
			return fmt.Errorf("node %s has no stream %s", n.Name(), contract.Default.StreamWebhooks)
		})
	}
}
