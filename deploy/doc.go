// Package deploy holds deployment files: Prometheus alert rules and Grafana dashboard, and Kubernetes
// manifests. It has no code; its tests decode the manifests into the Kubernetes API types and check the
// alert rules' runbook links.
package deploy
