// Package check holds the offline checks of the deployment examples: the
// Kubernetes base in deploy/kubernetes/base, its example overlay and the
// optional monitoring/ ServiceMonitor, built with kustomize's Go API as
// `kubectl apply -k` would (kubernetes_test.go), and deploy/compose.yaml
// (compose_test.go). It is a module of its own so that the Kubernetes API
// types, kustomize and the Compose loader stay out of mailbeacon's own
// dependencies; `make deploy-check` runs it.
package check
