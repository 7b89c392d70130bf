// Package cluster is the suite that runs docker-compose.yml's clustered deployment for real (issue 26):
// the FROM scratch images built by scripts/images.sh, the default profile (three NATS nodes at R3, two
// bridges with every role behind lb, the one webhook address, and the simulator as the upstream, on a
// front and a back network) under a compose project of its own, and faults injected with the Docker
// engine: a bridge stopped and started, a NATS node and a bridge killed, a bridge cut from the back
// network, every container restarted in turn. Through all of it the suite submits jobs over NATS as the
// downstream user and requires that every job the bridge accepted ends with exactly one verified result
// on results.>; it checks the networks from inside the containers, that each bridge took its Go memory
// limit from its container's, that lb spreads webhooks over both bridges and loses none while one is
// stopped, and that the calls the simulator counts from both bridges stay within the account's limit in
// every 10 s and 60 s window.
//
// It needs a Docker engine and takes minutes, so it runs only when asked:
//
//	BRIDGE_CLUSTER_TEST=1 go test -count=1 -v -timeout 15m ./test/cluster
//
// CI (.ci/run) runs it so, beside the race suite, wherever a Docker engine and a compose tool answer.
// BRIDGE_CLUSTER_TEST=reuse runs the images already tagged evershield/*:local instead of building them.
// Without the variable, or without an engine answering docker info, the test skips in one line. Every
// compose command goes through scripts/compose.sh, which runs docker compose (v2) or docker-compose
// (1.29), whichever is installed. The project is torn down (down -v: containers, networks, volumes) even
// when a check fails. Every port is published on 127.0.0.1, picked by the engine, so the suite clashes
// with no cluster already up; the test reaches containers only through those ports (its NATS client
// dials nats-N by asking the engine for the port that node publishes now, since a restart picks a new
// one), or by docker exec.
package cluster
