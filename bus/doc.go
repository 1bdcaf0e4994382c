// Package bus holds what every part of healer shares over NATS JetStream: the
// event envelope (CloudEvents 1.0 attribute names), subject names, the setup
// of the HEALER_EVENTS and HEALER_AUDIT streams and their key-value buckets,
// and the embedded NATS server that `healer serve` runs when no external
// server is configured.
package bus
