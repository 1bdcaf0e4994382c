// Package serve wires `healer serve` together: configuration, NATS
// JetStream (embedded or external), Redis or the in-process limiter,
// Kubernetes, policies, the engine and the HTTP endpoints. Run is what the
// command calls and what in-process end-to-end tests start.
package serve
