package bridge

import (
	"context"
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
}

// startNATS starts the embedded server when BRIDGE_NATS_URL is empty, connects, and provisions.
func startNATS(ctx context.Context, cfg Config, log zerolog.Logger) (*natsSide, error) {
	n := &natsSide{closed: make(chan struct{}), log: log}
	conn := natsx.ConnConfig{
		URLs: cfg.NATSURL, Name: "bridge", CredsFile: cfg.NATSCreds,
		TLSCertFile: cfg.NATSTLSCert, TLSKeyFile: cfg.NATSTLSKey, TLSCAFile: cfg.NATSTLSCA,
		Log: log, Closed: n.closed,
	}
	if cfg.NATSURL == "" {
		dir, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("%sDATA_DIR: %w", EnvPrefix, err)
		}
		n.srv, err = natsx.RunEmbedded(natsx.ServerConfig{
			Listen: cfg.NATSListen, StoreDir: dir, SyncInterval: cfg.NATSSync.Interval,
			SyncAlways: cfg.NATSSync.Always, Log: log,
		})
		if err != nil {
			return nil, err
		}
		conn.InProcess = n.srv
		log.Info().Str("listen", n.srv.ClientURL()).Str("store", dir).Msg("embedded nats-server ready")
	}
	var err error
	if n.nc, err = natsx.Connect(conn); err != nil {
		n.shutdownServer()
		return nil, err
	}
	if n.js, err = jetstream.New(n.nc); err != nil {
		n.close()
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n.res, err = natsx.Provision(pctx, n.js, natsx.ProvisionConfig{Names: cfg.Names(),
		Replicas: cfg.Replicas, DuplicateWindow: cfg.DuplicateWindow, Retention: cfg.Retention,
		MaxMsgSize: int32(max(int64(cfg.MaxBody)+16<<10, 1<<20)), MaxBytes: int64(cfg.StreamMaxBytes),
	})
	if err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

// ready reports whether NATS and JetStream are usable.
func (n *natsSide) ready() bool {
	return n.nc.IsConnected() && (n.srv == nil || n.srv.JetStreamEnabled())
}

// close drains the connection (waiting for it to close) and then stops the embedded server.
func (n *natsSide) close() {
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
