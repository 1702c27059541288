// Package check holds the offline checks of the deployment examples in
// deploy/kubernetes and deploy/compose.yaml (see check_test.go). It is a
// module of its own so that the Kubernetes API types and the Compose
// loader stay out of mailbeacon's own dependencies; `make deploy-check`
// runs it.
package check
