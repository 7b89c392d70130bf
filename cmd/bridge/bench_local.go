package main

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"

	"github.com/evershield/bridge/bridge"
	"github.com/evershield/bridge/upstream/simulator"
)

// localBridge is every role in one process with an embedded nats-server, against the simulator on a
// loopback port: what bridge demo and bridge bench run.
type localBridge struct {
	dir     string
	logFile *os.File
	sim     *simulator.Simulator
	app     *bridge.App
	stop    context.CancelFunc
	done    chan error
	keep    bool
}

// localSpec is what [startLocal] starts: a bridge named name (its data directory bridge-<name>-*, its
// reconciler's instance), the simulator for sim, and env on top of the in-process defaults.
type localSpec struct {
	name string
	sim  simulator.Config
	env  map[string]string
	// keep keeps the data directory and its bridge.log after close.
	keep bool
}

// bridgeUser is the bridge's own user of the in-process bridge's embedded server, for the bench, which
// adds a stream of its own (the floor's) beside the bridge's: more than the ops user may.
func (l *localBridge) bridgeUser() (nats.Option, error) {
	if u := l.app.EmbeddedUser(); u != nil {
		return u, nil
	}
	return nil, errors.New("the in-process bridge has no embedded server")
}

// startLocal starts the simulator for spec.sim and then every role, configured by spec.env on top of the
// in-process defaults (a fresh data directory, loopback ports, the simulator as upstream). Logs go to
// bridge.log in the data directory, which close removes unless spec.keep is set.
func startLocal(ctx context.Context, spec localSpec) (_ *localBridge, err error) {
	l := &localBridge{keep: spec.keep}
	simCfg := spec.sim
	if l.dir, err = os.MkdirTemp("", "bridge-"+spec.name+"-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.cleanup()
		}
	}()
	if l.logFile, err = os.Create(filepath.Join(l.dir, "bridge.log")); err != nil {
		return nil, err
	}
	log, _ := newLogger("info", "json", l.logFile)

	simCfg.Log = log.With().Str("component", "simulator").Logger()
	if l.sim, err = simulator.New(simCfg); err != nil {
		return nil, usageError{err}
	}
	if err = l.sim.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	vars := map[string]string{
		"BRIDGE_DATA_DIR": filepath.Join(l.dir, "data"), "BRIDGE_NATS_LISTEN": "127.0.0.1:0", "BRIDGE_HTTP_ADDR": "127.0.0.1:0",
		"BRIDGE_API_URL": l.sim.URL(), "BRIDGE_API_KEY": simulator.DefaultKey,
	}
	maps.Copy(vars, spec.env)
	cfg, err := parseConfig(vars)
	if err != nil {
		return nil, usageError{err}
	}
	appCtx, stop := context.WithCancel(ctx)
	if l.app, err = bridge.New(appCtx, cfg, log, bridge.WithPublicURLFromListener(), bridge.WithReconcileInstance(spec.name)); err != nil {
		stop()
		return nil, err
	}
	l.stop, l.done = stop, make(chan error, 1)
	go func() { l.done <- l.app.Run(appCtx) }()
	return l, nil
}

// close stops the roles, the embedded server and the simulator, and removes the data directory unless
// it is kept.
func (l *localBridge) close() {
	if l.stop != nil {
		l.stop()
		<-l.done
	}
	l.cleanup()
}

func (l *localBridge) cleanup() {
	if l.sim != nil {
		l.sim.Close()
	}
	if l.logFile != nil {
		l.logFile.Close()
	}
	if !l.keep {
		os.RemoveAll(l.dir)
	}
}
