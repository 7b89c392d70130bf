// Package natstest starts real embedded nats-servers with JetStream for tests: a single node or an
// in-process cluster on random loopback ports, each with its own temporary store.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/evershield/bridge/contract"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Node is one embedded server; it embeds *server.Server so ClientURL, Healthz and friends are at hand.
type Node struct {
	*server.Server
	opts *server.Options
}

// Cluster is the nodes of one in-process cluster.
type Cluster []*Node

// Option changes the server options before start.
type Option func(*server.Options) error

// WithOptions applies fn to the server options before start.
func WithOptions(fn func(*server.Options)) Option {
	return func(o *server.Options) error {
		if fn == nil {
			return fmt.Errorf("natstest: nil options func")
		}
		fn(o)
		return nil
	}
}

// WithUsers gives the node (every node of a cluster) these users, each with its permissions: a node with
// users refuses anonymous clients. The fixture itself (the cluster's readiness check) connects as the
// first, which must be allowed $JS.API.INFO. Each node gets its own copies.
func WithUsers(users ...*server.User) Option {
	return func(o *server.Options) error {
		if len(users) == 0 {
			return fmt.Errorf("natstest: WithUsers: no user")
		}
		for _, u := range users {
			if u == nil || u.Username == "" {
				return fmt.Errorf("natstest: WithUsers: a user without a name")
			}
		}
		o.Users = (&server.Options{Users: users}).Clone().Users // deep copies
		return nil
	}
}

func defaultOptions(tb testing.TB, name string) *server.Options {
	return &server.Options{
		ServerName: name,
		Host:       "127.0.0.1",
		Port:       -1,
		NoLog:      true,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   tb.TempDir(),
	}
}

// RunServer starts a single JetStream node on a random loopback port; it is shut down at test cleanup.
func RunServer(tb testing.TB, opts ...Option) *Node {
	tb.Helper()
	o := defaultOptions(tb, "S1")
	for _, opt := range opts {
		if err := opt(o); err != nil {
			tb.Fatalf("natstest: %v", err)
		}
	}
	n := &Node{opts: o}
	n.start(tb)
	tb.Cleanup(n.Stop)
	return n
}

func (n *Node) start(tb testing.TB) {
	tb.Helper()
	s, err := server.NewServer(n.opts)
	if err != nil {
		tb.Fatalf("natstest: new server %s: %v", n.opts.ServerName, err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		tb.Fatalf("natstest: server %s not ready for connections within 10s", n.opts.ServerName)
	}
	n.Server = s
}

// Stop shuts the node down and waits; it is safe to call more than once.
func (n *Node) Stop() {
	if n.Server == nil {
		return
	}
	n.Shutdown()
	n.WaitForShutdown()
}

// Restart stops the node and starts it again on the same ports and store, then waits until healthy.
func (n *Node) Restart(tb testing.TB) {
	tb.Helper()
	n.Stop()
	// The server wrote the resolved ports back into opts on first start, so a clone reuses them.
	n.opts = n.opts.Clone()
	n.start(tb)
	n.WaitHealthy(tb)
}

// Start starts a stopped node again on the same ports and store, without waiting for health.
func (n *Node) Start(tb testing.TB) {
	tb.Helper()
	n.opts = n.opts.Clone()
	n.start(tb)
}

// WaitHealthy waits until the node's meta group, streams and consumers are current.
func (n *Node) WaitHealthy(tb testing.TB) {
	tb.Helper()
	WaitFor(tb, 30*time.Second, func() error {
		if st := n.Healthz(nil); st.Status != "ok" {
			return fmt.Errorf("healthz %s: %s %s", n.opts.ServerName, st.Status, st.Error)
		}
		return nil
	})
}

// RunCluster starts size JetStream nodes in one cluster and waits until the meta leader sees all peers and
// a client can reach JetStream.
func RunCluster(tb testing.TB, size int, opts ...Option) Cluster {
	tb.Helper()
	seedPort := freePort(tb)
	route := server.RoutesFromStr(fmt.Sprintf("nats-route://127.0.0.1:%d", seedPort))
	c := make(Cluster, size)
	for i := range size {
		o := defaultOptions(tb, fmt.Sprintf("S%d", i+1))
		o.Cluster = server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: -1}
		if i == 0 {
			o.Cluster.Port = seedPort
		}
		// JetStream clustering needs a route on every node; the seed drops its route to itself.
		o.Routes = route
		for _, opt := range opts {
			if err := opt(o); err != nil {
				tb.Fatalf("natstest: %v", err)
			}
		}
		n := &Node{opts: o}
		n.start(tb)
		tb.Cleanup(n.Stop)
		c[i] = n
	}
	c.WaitReady(tb)
	return c
}

// WaitReady waits until some node is meta leader with every peer known and a client can use JetStream.
func (c Cluster) WaitReady(tb testing.TB) {
	tb.Helper()
	WaitFor(tb, 30*time.Second, func() error {
		for _, n := range c {
			if n.Server != nil && n.Running() && n.JetStreamIsLeader() && len(n.JetStreamClusterPeers()) == len(c) {
				return nil
			}
		}
		return fmt.Errorf("no meta leader with %d peers", len(c))
	})
	var auth []nats.Option
	if users := c[0].opts.Users; len(users) > 0 {
		auth = append(auth, nats.UserInfo(users[0].Username, users[0].Password))
	}
	nc, js := Connect(tb, c.URLs(), auth...)
	defer nc.Close()
	WaitFor(tb, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err
	})
}

// URLs is the comma-joined client URLs of every node.
func (c Cluster) URLs() string {
	urls := make([]string, 0, len(c))
	for _, n := range c {
		urls = append(urls, fmt.Sprintf("nats://%s:%d", n.opts.Host, n.opts.Port))
	}
	return strings.Join(urls, ",")
}

// Connect opens a client that reconnects forever, closed at test cleanup.
func Connect(tb testing.TB, urls string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		tb.Fatalf("natstest: connect %s: %v", urls, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// freePort reserves a loopback port by listening and closing at once; a clash later fails loudly.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("natstest: reserve port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StreamMsgs reads every message of stream by sequence, in order, skipping deleted ones and the result
// fences of RESULTS (subjects under contract.Default.SubjectResultFence: bookkeeping that keeps each result single,
// not messages a reader of results wants).
func StreamMsgs(tb testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		tb.Fatalf("natstest: stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatalf("natstest: stream %s info: %v", stream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			tb.Fatalf("natstest: stream %s seq %d: %v", stream, seq, err)
		}
		if strings.HasPrefix(m.Subject, contract.Default.SubjectResultFence) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// Mentions is how many of ids appear anywhere in stream (as StreamMsgs reads it): in a message's subject,
// headers or body.
func Mentions(tb testing.TB, js jetstream.JetStream, stream string, ids []string) int {
	tb.Helper()
	var all strings.Builder
	for _, m := range StreamMsgs(tb, js, stream) {
		fmt.Fprintf(&all, "%s %v %s\n", m.Subject, m.Header, m.Data)
	}
	n := 0
	for _, id := range ids {
		if strings.Contains(all.String(), id) {
			n++
		}
	}
	return n
}
