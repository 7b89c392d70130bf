package bridge

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/evershield/bridge/natsx"
)

// natsSide is the process's NATS: an optional embedded server, one connection, the provisioned resources.
type natsSide struct {
	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	res    natsx.Resources
	closed chan struct{}
	log    zerolog.Logger
	// borrowed is set when the connection is the caller's ([WithConn]): close leaves it open.
	borrowed bool
	// identity is the bridge's own user of its embedded server; nil without one.
	identity *natsx.Identity
}

// startNATS starts the embedded server when BRIDGE_NATS_URL is empty, connects, and provisions; with a
// caller's connection (borrowed, from [WithConn]) it only provisions, on that connection.
func startNATS(ctx context.Context, cfg Config, log zerolog.Logger, borrowed *nats.Conn) (*natsSide, error) {
	n := &natsSide{closed: make(chan struct{}), log: log}
	if borrowed != nil {
		return n.borrow(ctx, cfg, borrowed)
	}
	conn := natsx.ConnConfig{
		URLs: cfg.NATSURL, Name: "bridge", CredsFile: cfg.NATSCreds,
		TLSCertFile: cfg.NATSTLSCert, TLSKeyFile: cfg.NATSTLSKey, TLSCAFile: cfg.NATSTLSCA,
		Log: log, Closed: n.closed,
	}
	if cfg.NATSURL == "" {
		var err error
		if n.srv, conn.Identity, err = startEmbedded(cfg, log); err != nil {
			return nil, err
		}
		conn.InProcess, n.identity = n.srv, conn.Identity
	}
	var err error
	if n.nc, err = natsx.Connect(conn); err != nil {
		n.shutdownServer()
		return nil, err
	}
	if err := n.prepare(ctx, cfg); err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

// startEmbedded starts the embedded server with its authorization, and returns it with the bridge's own
// user, made afresh for this start.
func startEmbedded(cfg Config, log zerolog.Logger) (*server.Server, *natsx.Identity, error) {
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("%sDATA_DIR: %w", EnvPrefix, err)
	}
	identity, err := natsx.NewIdentity()
	if err != nil {
		return nil, nil, err
	}
	auth := &natsx.AuthConfig{ConfigFile: cfg.NATSConfig, Account: cfg.NATSAccount, Names: cfg.Names(),
		OpsSeed: filepath.Join(dir, natsx.OpsSeedFile), Bridge: identity}
	srv, err := natsx.RunEmbedded(natsx.ServerConfig{Auth: auth,
		Listen: cfg.NATSListen, StoreDir: dir, SyncInterval: cfg.NATSSync.Interval, Domain: cfg.JSDomain,
		SyncAlways: cfg.NATSSync.Always, Log: log,
	})
	if errors.Is(err, natsx.ErrUnprotected) {
		return nil, nil, fmt.Errorf("%sNATS_LISTEN: %w", EnvPrefix, err)
	}
	if err != nil {
		return nil, nil, err
	}
	log.Info().Str("listen", srv.ClientURL()).Str("store", dir).Msg("embedded nats-server ready")
	return srv, identity, nil
}

// prepare makes the JetStream context on n.nc (in BRIDGE_JS_DOMAIN), and provisions the streams and
// buckets or, with BRIDGE_PROVISION=false, checks them.
func (n *natsSide) prepare(ctx context.Context, cfg Config) error {
	var err error
	if n.js, err = natsx.NewJetStream(n.nc, cfg.JSDomain); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n.res, err = cfg.provision(pctx, n.js)
	return err
}

// ProvisionConfig is what the streams and buckets are made with, from the configuration.
func (c *Config) ProvisionConfig() natsx.ProvisionConfig {
	return natsx.ProvisionConfig{Names: c.Names(),
		Replicas: c.Replicas, DuplicateWindow: c.DuplicateWindow, Retention: c.Retention,
		MaxMsgSize: int32(max(int64(c.MaxBody)+16<<10, 1<<20)), MaxBytes: int64(c.StreamMaxBytes),
	}
}

// provision creates or updates the streams and buckets, or with BRIDGE_PROVISION=false checks them.
func (c *Config) provision(ctx context.Context, js jetstream.JetStream) (natsx.Resources, error) {
	if !c.Provision.CheckOnly() {
		return natsx.Provision(ctx, js, c.ProvisionConfig())
	}
	res, err := natsx.Check(ctx, js, c.ProvisionConfig())
	if errors.Is(err, natsx.ErrNotProvisioned) {
		return res, fmt.Errorf("%sPROVISION=false: %w (run bridge provision, or create it as docs/DESIGN.md says)", EnvPrefix, err)
	}
	return res, err
}

// ready reports whether NATS and JetStream are usable.
func (n *natsSide) ready() bool {
	return n.nc.IsConnected() && (n.srv == nil || n.srv.JetStreamEnabled())
}

// close drains the connection (waiting for it to close) and then stops the embedded server; a borrowed
// connection is only flushed.
func (n *natsSide) close() {
	if n.borrowed {
		n.flush()
		return
	}
	if err := n.nc.Drain(); err == nil {
		select {
		case <-n.closed:
		case <-time.After(10 * time.Second):
			n.log.Warn().Msg("nats drain did not finish within 10s; closing")
			n.nc.Close()
		}
	} else {
		n.nc.Close()
	}
	n.shutdownServer()
}

func (n *natsSide) shutdownServer() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}
