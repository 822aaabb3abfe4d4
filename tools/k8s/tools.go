//go:build tools

// Package tools records the Kubernetes commands that scripts/kube-sandbox
// builds, so that `go mod tidy` keeps their dependencies in go.sum.
// It is never compiled (the build tag is never set).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
