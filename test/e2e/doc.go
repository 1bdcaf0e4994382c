// Package e2e holds healer's end-to-end tests: `healer serve` in-process
// against real components only — embedded NATS JetStream, a redis-server,
// and a kube-apiserver with etcd built by `make testenv`.
package e2e
