// Package bridge is the application: the process configuration ([Config]), the NATS side (an embedded
// nats-server or an external cluster, provisioned by jetstream.Provision), and the wiring of the roles
// (ingest, verify, reconcile and submit) in one fixed start and stop order.
//
// Other Go programs embed the bridge as
//
//	a, err := bridge.New(ctx, cfg, log)
//	...
//	err = a.Run(ctx)
//
// The roles live in their own packages and never import each other; only this package knows them all.
package bridge
