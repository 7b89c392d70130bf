// Package deploy holds deployment files: Prometheus alert rules and Grafana dashboard, Kubernetes
// manifests and the Helm chart. It has none of the bridge's code; its tests check every deployment file
// with its ecosystem's own parser: the manifests decoded into the Kubernetes API types, the chart (with
// -tags helm, as Helm is heavy to compile) rendered and linted by Helm's own packages (helm.sh/helm/v4) and
// its objects decoded likewise (the ServiceMonitor
// into the Prometheus Operator's type), docker-compose.yml loaded by compose-go, the alert rules by
// Prometheus's rule parser (with their runbook links), the dashboard's queries as PromQL. It also
// validates the contract documents, docs/asyncapi.yaml and docs/openapi.yaml, against their
// meta-schemas (AsyncAPI 3.0.0 in testdata, OpenAPI 3.1 from libopenapi), offline.
//
// It also holds the supply-chain tools (issue 27): govulncheck, pinned by go.mod's tool line, and
// cmd/vulndb, which turns the golang.org/x/vulndb module into the database govulncheck reads, so that
// scripts/vulncheck.sh scans the bridge offline. And cmd/lb, the webhook load balancer docker-compose.yml
// runs in front of its bridges (scripts/images.sh builds it into a FROM scratch image), since no
// load-balancer image can be pulled where there is no registry.
//
// It is a module of its own so that those parsers' and tools' dependencies stay out of the bridge's
// go.mod; run its tests with (cd deploy && go test ./...).
package deploy
