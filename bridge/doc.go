// Package bridge is the application: the process configuration ([Config]), the NATS side (an embedded
// nats-server, an external cluster, or the caller's connection, provisioned by natsx.Provision), and the
// wiring of the roles (ingest, verify, reconcile and submit) in one fixed start and stop order.
//
// Other Go programs embed the bridge as
//
//	cfg, err := bridge.ConfigFromEnv(envMap) // or bridge.DefaultConfig(), filled in and validated
//	...
//	a, err := bridge.New(ctx, cfg, log, bridge.WithConn(nc), bridge.WithRegisterer(reg), bridge.WithoutListener())
//	...
//	mux.Handle("POST /hooks/moderation/webhook/{modality}", a.WebhookHandler())
//	mux.Handle("GET /bridge/", http.StripPrefix("/bridge", a.Handler()))
//	err = a.Run(ctx)
//
// Without options the bridge starts or dials its own NATS, has its own Prometheus registry and binds its
// own listener, as the binary does. [WithConn] runs it on the caller's *nats.Conn, which it leaves open;
// [WithRegisterer] registers its metrics with the caller's registry; [WithoutListener] leaves the HTTP
// server to the caller, who mounts [App.Handler] or [App.WebhookHandler]; [WithTracerProvider] traces
// webhooks, verifications, upstream calls and submissions with the caller's OpenTelemetry provider (the
// binary's is [TracingFromEnv]'s). In every case, when Run's ctx ends, readiness turns off first and the
// roles drain in order before Run returns.
//
// The roles live in their own packages and never import each other; only this package knows them all.
package bridge
