package vip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// Bucket is the JetStream key-value bucket that holds the VIP leases. It is
// part of healer's wire contract: serve, the agents and the CLI must agree
// on it.
const Bucket = "healer_vip_leases"

// EnsureBucket creates the lease bucket, or updates it, with replicas
// JetStream replicas (1 when replicas is 0 or less; use the same count as
// the other healer streams). Only serve calls it; an agent binds to the
// existing bucket with js.KeyValue(ctx, Bucket), which its NATS
// permissions allow.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return bus.EnsureKV(ctx, js, bus.KV{Bucket: Bucket, Description: "healer: VIP leases (who may carry each virtual IP)", Replicas: replicas, History: 1})
}

// LeaseKey is the key of a VIP's lease: the address with '.' turned into
// '-' (and, for IPv6, ':' into '_'), for example "10-10-0-100".
func LeaseKey(addr netip.Addr) string {
	return strings.NewReplacer(".", "-", ":", "_").Replace(addr.Unmap().String())
}

// Lease is the value of a VIP's lease key, as JSON.
type Lease struct {
	// VIP is the address, without prefix length.
	VIP string `json:"vip"`
	// Holder is the node that holds, or last held, the lease.
	Holder string `json:"holder"`
	// Term counts holders: each acquisition by a node that did not hold
	// the lease increments it.
	Term uint64 `json:"term"`
	// Expires is the holder's clock at its last renewal plus the lease TTL.
	Expires time.Time `json:"expires"`
	// Renewed is the holder's clock at its last renewal.
	Renewed time.Time `json:"renewed"`
	// Acquired is when this term began, on the holder's clock.
	Acquired time.Time `json:"acquired"`
	// Action is the id of the request that acquired the lease.
	Action string `json:"action,omitempty"`
	// Released is true when the holder gave the lease up on purpose. A
	// released lease may be taken at once, and its loss is not reported.
	Released bool `json:"released,omitempty"`
}

// Valid reports whether the lease still binds others at now: held, not
// released and not expired.
func (l *Lease) Valid(now time.Time) bool {
	return !l.Released && now.Before(l.Expires)
}

// Errors of the lease operations.
var (
	// errNoLease means the VIP has no lease key.
	errNoLease = errors.New("no lease")
	// errLeaseHeld means another node holds a valid lease.
	errLeaseHeld = errors.New("lease held by another node")
	// errLeaseLost means the lease changed under its holder: someone else
	// wrote it, so the holder no longer holds it.
	errLeaseLost = errors.New("lease lost")
)

// leaseEntry is a lease with the revision it was read or written at.
type leaseEntry struct {
	Lease
	rev uint64
}

// kvStore is the part of jetstream.KeyValue that leases use.
type kvStore interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
}

var _ kvStore = (jetstream.KeyValue)(nil)

// lazyBucket is the lease bucket, bound on first use and again after a
// failed bind, so a Keeper can start while NATS is unreachable (and fail
// closed meanwhile). Binding needs only the bucket's stream info, which an
// agent's NATS permissions allow; it never creates the bucket.
type lazyBucket struct {
	js jetstream.JetStream
	mu sync.Mutex
	kv jetstream.KeyValue
}

var _ kvStore = (*lazyBucket)(nil)

func (b *lazyBucket) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kv != nil {
		return b.kv, nil
	}
	kv, err := b.js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("bind bucket %s: %w", Bucket, err)
	}
	b.kv = kv
	return kv, nil
}

func (b *lazyBucket) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	kv, err := b.bucket(ctx)
	if err != nil {
		return nil, err
	}
	return kv.Get(ctx, key)
}

func (b *lazyBucket) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	kv, err := b.bucket(ctx)
	if err != nil {
		return 0, err
	}
	return kv.Create(ctx, key, value, opts...)
}

func (b *lazyBucket) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	kv, err := b.bucket(ctx)
	if err != nil {
		return 0, err
	}
	return kv.Update(ctx, key, value, revision)
}

// leases reads and writes leases. Every write is a compare-and-set on the
// key's revision.
type leases struct {
	kv  kvStore
	ttl time.Duration
	now func() time.Time
}

// get reads the lease of addr; errNoLease when there is none.
func (s *leases) get(ctx context.Context, addr netip.Addr) (leaseEntry, error) {
	return readLease(ctx, s.kv, addr)
}

// readLease reads the lease of addr from kv; errNoLease when there is none.
func readLease(ctx context.Context, kv kvStore, addr netip.Addr) (leaseEntry, error) {
	e, err := kv.Get(ctx, LeaseKey(addr))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return leaseEntry{}, fmt.Errorf("lease of vip %s: %w", addr, errNoLease)
	}
	if err != nil {
		return leaseEntry{}, fmt.Errorf("read lease of vip %s: %w", addr, err)
	}
	return decodeLease(addr, e.Value(), e.Revision())
}

func decodeLease(addr netip.Addr, b []byte, rev uint64) (leaseEntry, error) {
	var l Lease
	if err := json.Unmarshal(b, &l); err != nil {
		return leaseEntry{}, fmt.Errorf("decode lease of vip %s (revision %d): %w", addr, rev, err)
	}
	if l.VIP != addr.String() || l.Holder == "" {
		return leaseEntry{}, fmt.Errorf("decode lease of vip %s (revision %d): lease names vip %q, holder %q", addr, rev, l.VIP, l.Holder)
	}
	return leaseEntry{Lease: l, rev: rev}, nil
}

// acquire takes the lease of addr for node: it creates the key when there
// is none, and otherwise updates it at the revision it read, when the lease
// there is released, expired, or already node's. It returns the lease
// written and when its TTL started (the send time, on this clock, with its
// monotonic reading), from which the holder's fence deadline is computed.
// Another node's valid lease is errLeaseHeld; a lost race is an error
// wrapping jetstream.ErrKeyExists or jetstream.ErrKeyRevisionMismatch.
func (s *leases) acquire(ctx context.Context, addr netip.Addr, node, actionID string) (leaseEntry, time.Time, error) {
	cur, err := s.get(ctx, addr)
	if err != nil && !errors.Is(err, errNoLease) {
		return leaseEntry{}, time.Time{}, err
	}
	exists := err == nil
	now := s.now()
	next := Lease{VIP: addr.String(), Holder: node, Term: 1, Acquired: now.UTC(), Action: actionID}
	if exists {
		switch {
		case cur.Valid(now) && cur.Holder != node:
			return leaseEntry{}, time.Time{}, fmt.Errorf("vip %s: %w: %s holds it until %s (term %d)",
				addr, errLeaseHeld, cur.Holder, cur.Expires.Format(time.RFC3339Nano), cur.Term)
		case cur.Valid(now):
			// Already ours (an agent that restarted): keep the term.
			next.Term, next.Acquired = cur.Term, cur.Acquired
			if next.Action == "" {
				next.Action = cur.Action
			}
		default:
			next.Term = cur.Term + 1
		}
	}
	next.Renewed = now.UTC()
	next.Expires = now.Add(s.ttl).UTC()
	b, err := json.Marshal(next)
	if err != nil {
		return leaseEntry{}, time.Time{}, fmt.Errorf("encode lease of vip %s: %w", addr, err)
	}
	var rev uint64
	if exists {
		rev, err = s.kv.Update(ctx, LeaseKey(addr), b, cur.rev)
	} else {
		rev, err = s.kv.Create(ctx, LeaseKey(addr), b)
	}
	if err != nil {
		rev, err = s.confirm(ctx, addr, b, err)
	}
	if err != nil {
		return leaseEntry{}, time.Time{}, fmt.Errorf("acquire lease of vip %s for node %s: %w", addr, node, err)
	}
	return leaseEntry{Lease: next, rev: rev}, now, nil
}

// renew extends a lease the caller holds, at the revision it last wrote.
// A lease that changed since is errLeaseLost.
func (s *leases) renew(ctx context.Context, addr netip.Addr, held leaseEntry) (leaseEntry, time.Time, error) {
	now := s.now()
	next := held.Lease
	next.Renewed = now.UTC()
	next.Expires = now.Add(s.ttl).UTC()
	b, err := json.Marshal(next)
	if err != nil {
		return leaseEntry{}, time.Time{}, fmt.Errorf("encode lease of vip %s: %w", addr, err)
	}
	rev, err := s.kv.Update(ctx, LeaseKey(addr), b, held.rev)
	if err != nil {
		rev, err = s.confirm(ctx, addr, b, err)
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		return leaseEntry{}, time.Time{}, fmt.Errorf("renew lease of vip %s (term %d): %w: %w", addr, held.Term, errLeaseLost, err)
	}
	if err != nil {
		return leaseEntry{}, time.Time{}, fmt.Errorf("renew lease of vip %s (term %d): %w", addr, held.Term, err)
	}
	return leaseEntry{Lease: next, rev: rev}, now, nil
}

// release marks node's lease of addr released, so another node may take it
// at once. It reports whether it changed anything: a lease that is not
// node's, or already released, is left alone.
func (s *leases) release(ctx context.Context, addr netip.Addr, node string) (bool, error) {
	for attempt := 0; attempt < 3; attempt++ {
		cur, err := s.get(ctx, addr)
		if errors.Is(err, errNoLease) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if cur.Holder != node || cur.Released {
			return false, nil
		}
		next := cur.Lease
		now := s.now().UTC()
		next.Released = true
		next.Renewed = now
		if next.Expires.After(now) {
			next.Expires = now
		}
		b, err := json.Marshal(next)
		if err != nil {
			return false, fmt.Errorf("encode lease of vip %s: %w", addr, err)
		}
		_, err = s.kv.Update(ctx, LeaseKey(addr), b, cur.rev)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, fmt.Errorf("release lease of vip %s by node %s: %w", addr, node, err)
		}
		// A renewal still in flight moved the revision: read again.
	}
	return false, fmt.Errorf("release lease of vip %s by node %s: revision kept changing", addr, node)
}

// confirm looks again after a failed write: a write that JetStream applied
// but whose acknowledgement was lost (and then retried into a revision
// mismatch) shows up as the key holding exactly the bytes written. Any
// other outcome returns the original error.
func (s *leases) confirm(ctx context.Context, addr netip.Addr, written []byte, werr error) (uint64, error) {
	e, err := s.kv.Get(ctx, LeaseKey(addr))
	if err != nil || !bytes.Equal(e.Value(), written) {
		return 0, werr
	}
	return e.Revision(), nil
}
