package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KV describes a key-value bucket healer keeps state in.
type KV struct {
	Bucket      string
	Description string
	// Replicas is the bucket's replication in a NATS cluster; at least 1.
	Replicas int
	// History is how many values per key are kept; at least 1.
	History int
	// TTL, when set, removes values that are older.
	TTL time.Duration
}

// EnsureKV creates the bucket, or updates its settings when it exists, on
// file storage.
func EnsureKV(ctx context.Context, js jetstream.JetStream, b KV) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      b.Bucket,
		Description: b.Description,
		Storage:     jetstream.FileStorage,
		Replicas:    max(b.Replicas, 1),
		History:     uint8(min(max(b.History, 1), 64)), //nolint:gosec // clamped to 1..64
		TTL:         b.TTL,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", b.Bucket, err)
	}
	return kv, nil
}
