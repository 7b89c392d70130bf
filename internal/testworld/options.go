package testworld

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/evershield/bridge/internal/simtest"
	"github.com/evershield/bridge/natsx"
	"github.com/evershield/bridge/upstream/simulator"
)

// Option chooses a part of the [World] New starts: its topology, its provisioning, its simulator, and
// what else to start. Each checks its own argument; New fails the test on an option's error.
type Option func(*config) error

type config struct {
	topo      Topology
	provision *natsx.ProvisionConfig // nil: none
	sim       *simulator.Config      // nil: none
	simOpts   []simtest.Option
	hooks     bool
	earlier   bool // JOBS made as the earlier release made it, before provisioning
	users     []*server.User
}

// WithTopology runs JetStream on topo instead of Single; the streams and buckets get its replicas.
func WithTopology(topo Topology) Option {
	return func(c *config) error {
		if topo.Replicas < 1 {
			return fmt.Errorf("WithTopology(%v): must have at least one replica", topo)
		}
		c.topo = topo
		return nil
	}
}

// WithProvision provisions the streams and buckets with pc instead of the defaults; a zero
// pc.Replicas is the topology's.
func WithProvision(pc natsx.ProvisionConfig) Option {
	return func(c *config) error {
		if pc.Replicas < 0 {
			return fmt.Errorf("WithProvision: replicas %d: must not be negative", pc.Replicas)
		}
		c.provision = &pc
		return nil
	}
}

// WithoutProvision leaves the servers empty, for a bridge under test that provisions them itself: no
// streams, buckets, store or deliverer.
func WithoutProvision() Option {
	return func(c *config) error {
		c.provision = nil
		return nil
	}
}

// WithSimulator starts the upstream simulator for cfg, adjusted by opts, and a client of it.
func WithSimulator(cfg simulator.Config, opts ...simtest.Option) Option {
	return func(c *config) error {
		for _, o := range opts {
			if o == nil {
				return errors.New("WithSimulator: nil simtest option")
			}
		}
		c.sim, c.simOpts = &cfg, opts
		return nil
	}
}

// WithHookReceiver starts the webhook receiver ([World.StartHookReceiver]) at [World.HookURL].
func WithHookReceiver() Option {
	return func(c *config) error {
		c.hooks = true
		return nil
	}
}

// WithEarlierLayout makes JOBS as the releases before the history made it ([EarlierJobs]: layout 1,
// tombstones kept for ever) before the world provisions, as on a store being upgraded.
func WithEarlierLayout() Option {
	return func(c *config) error {
		c.earlier = true
		return nil
	}
}

// WithUsers gives every node these users (natstest.WithUsers), so that anonymous clients are refused;
// the world connects, and provisions, as the first: an administrator.
func WithUsers(users ...*server.User) Option {
	return func(c *config) error {
		if len(users) == 0 || users[0] == nil {
			return errors.New("WithUsers: no administrator")
		}
		c.users = users
		return nil
	}
}
