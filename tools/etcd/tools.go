//go:build tools

// Package tools records the etcd server command that scripts/kube-sandbox
// builds, so that `go mod tidy` keeps its dependencies in go.sum.
package tools

import _ "go.etcd.io/etcd/server/v3"
