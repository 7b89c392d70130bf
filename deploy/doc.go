// Package deploy holds deployment files: Prometheus alert rules and Grafana dashboard, and Kubernetes
// manifests. It has no code; its tests check every deployment file with its ecosystem's own parser: the
// manifests decoded into the Kubernetes API types, docker-compose.yml loaded by compose-go, the alert
// rules by Prometheus's rule parser (with their runbook links), the dashboard's queries as PromQL.
//
// It is a module of its own so that those parsers' dependencies stay out of the bridge's go.mod; run
// its tests with (cd deploy && go test ./...).
package deploy
