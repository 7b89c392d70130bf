package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/evershield/bridge/natsx"
)

// Names of the floor's own stream, so its messages never reach the verifier.
const (
	floorStream  = "BENCH_FLOOR"
	floorSubject = "bench.floor"
)

// floorServer is the bare net/http + nats.go handler ingest is compared with, as in BenchmarkIngestFloor:
// it reads the body and publishes it with the Nats-Msg-Id the load sends in X-Job-Id, waits for the ack
// and answers 200; no parsing, checks, metrics or logs. In-process it runs against the same embedded
// server as the bridge, over an in-process connection like the bridge's own; against an external server
// (--nats) over TCP, as a bridge with BRIDGE_NATS_URL does.
type floorServer struct {
	url string
	srv *http.Server
	nc  *nats.Conn
}

// startFloor starts a floor on the embedded server ns, connected as user, on a loopback port.
func startFloor(ctx context.Context, ns *server.Server, user nats.Option) (*floorServer, error) {
	nc, err := nats.Connect("", nats.InProcessServer(ns), nats.Name("bench-floor"), user)
	if err != nil {
		return nil, err
	}
	return serveFloor(ctx, nc, "127.0.0.1:0")
}

// startFloorURL starts a floor connected to the NATS server at url, listening on addr.
func startFloorURL(ctx context.Context, url, addr string) (*floorServer, error) {
	nc, err := nats.Connect(url, nats.Name("bench-floor"))
	if err != nil {
		return nil, fmt.Errorf("floor: connect %s: %w", url, err)
	}
	return serveFloor(ctx, nc, addr)
}

// serveFloor creates the floor's stream through nc and serves the floor on addr; it owns nc.
func serveFloor(ctx context.Context, nc *nats.Conn, addr string) (*floorServer, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	// The floor's stream is configured as WEBHOOKS is by default (file storage, a 20 min duplicate window,
	// retention), so that the comparison measures the handlers, not two streams' settings.
	sc := natsx.StreamConfigs(natsx.ProvisionConfig{})[0]
	sc.Name, sc.Subjects, sc.Description = floorStream, []string{floorSubject}, "bridge bench floor"
	if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("floor stream: %w", err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		pctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		msg := &nats.Msg{Subject: floorSubject, Data: body, Header: nats.Header{jetstream.MsgIDHeader: {r.Header.Get("X-Job-Id")}}}
		if _, err := js.PublishMsg(pctx, msg); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		nc.Close()
		return nil, err
	}
	f := &floorServer{url: "http://" + ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, nc: nc}
	go func() {
		if err := f.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("floor server:", err)
		}
	}()
	return f, nil
}

func (f *floorServer) close() {
	_ = f.srv.Close()
	f.nc.Close()
}
