package vip

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// Event attributes of the watcher's verdicts.
const (
	// EventTypeHolderLost is the type of the event published when a lease
	// expired without being released: its holder stopped renewing.
	EventTypeHolderLost = "VIPHolderLost"
	// EventSource is the source of the watcher's events.
	EventSource = "vip"
)

// Publisher publishes events durably; *bus.Publisher is one.
type Publisher interface {
	Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error)
}

// HolderLost is the data of a VIPHolderLost event.
type HolderLost struct {
	// VIP is the address.
	VIP string `json:"vip"`
	// Holder is the node that stopped renewing.
	Holder string `json:"holder"`
	// Term is the lease term that lapsed.
	Term uint64 `json:"term"`
	// ExpiredAt is when the lease expired, on the holder's clock.
	ExpiredAt time.Time `json:"expired_at"`
	// Revision is the lease key's revision that lapsed.
	Revision uint64 `json:"revision"`
}

// Watcher watches the lease bucket and publishes a VIPHolderLost event for
// each lease that expires without being released. Several replicas may run
// one: the event id is derived from the VIP, the holder, the term and the
// revision, so JetStream stores each verdict once.
type Watcher struct {
	kv             jetstream.KeyValue
	pub            Publisher
	log            *slog.Logger
	now            func() time.Time
	publishTimeout time.Duration // bounds each publish attempt
	wg             sync.WaitGroup
}

// NewWatcher returns a watcher of the lease bucket kv that publishes its
// verdicts through pub.
func NewWatcher(kv jetstream.KeyValue, pub Publisher, log *slog.Logger) *Watcher {
	return &Watcher{kv: kv, pub: pub, log: log.With("component", "vip.watcher"), now: time.Now, publishTimeout: 5 * time.Second}
}

// watched is the latest lease of one key.
type watched struct {
	addr     netip.Addr
	entry    leaseEntry
	reported bool
}

// Run watches until ctx ends (then it returns nil) or the watch fails.
// Leases already lapsed when it starts are reported too. Publishing is
// retried with backoff until it succeeds or ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.wg.Wait()
	kw, err := w.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", Bucket, err)
	}
	defer func() { _ = kw.Stop() }()
	leases := map[string]*watched{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-kw.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch bucket %s: watch ended", Bucket)
			}
			if e == nil {
				// Initial values delivered.
				w.check(ctx, leases, timer)
				continue
			}
			w.update(ctx, leases, e)
			w.check(ctx, leases, timer)
		case <-timer.C:
			w.check(ctx, leases, timer)
		}
	}
}

// update records one change of the bucket.
func (w *Watcher) update(ctx context.Context, leases map[string]*watched, e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		delete(leases, e.Key())
		return
	}
	var l Lease
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		w.log.WarnContext(ctx, "undecodable lease; ignored", "key", e.Key(), "revision", e.Revision(), "err", err)
		delete(leases, e.Key())
		return
	}
	addr, err := netip.ParseAddr(l.VIP)
	if err != nil || LeaseKey(addr) != e.Key() {
		w.log.WarnContext(ctx, "lease under the wrong key; ignored", "key", e.Key(), "vip", l.VIP, "revision", e.Revision())
		delete(leases, e.Key())
		return
	}
	entry, err := decodeLease(addr, e.Value(), e.Revision())
	if err != nil {
		w.log.WarnContext(ctx, "invalid lease; ignored", "key", e.Key(), "err", err)
		delete(leases, e.Key())
		return
	}
	leases[e.Key()] = &watched{addr: addr, entry: entry}
}

// check reports every lease that lapsed and sets timer to the next expiry.
func (w *Watcher) check(ctx context.Context, leases map[string]*watched, timer *time.Timer) {
	now := w.now()
	var next time.Time
	for _, l := range leases {
		if l.reported || l.entry.Released {
			continue
		}
		if now.Before(l.entry.Expires) {
			if next.IsZero() || l.entry.Expires.Before(next) {
				next = l.entry.Expires
			}
			continue
		}
		l.reported = true
		ev, err := HolderLostEvent(l.addr, l.entry.Lease, l.entry.rev, now)
		if err != nil {
			w.log.ErrorContext(ctx, "cannot build the holder-lost event", "vip", l.addr.String(), "err", err)
			continue
		}
		w.log.WarnContext(ctx, "vip lease expired without release: holder lost", "vip", l.addr.String(),
			"holder", l.entry.Holder, "term", l.entry.Term, "expired_at", l.entry.Expires, "event_id", ev.ID)
		w.wg.Go(func() { w.publish(ctx, ev) })
	}
	if !next.IsZero() {
		timer.Reset(max(next.Sub(w.now()), 0))
	}
}

// publish stores ev, retrying with backoff until it is stored or ctx ends.
func (w *Watcher) publish(ctx context.Context, ev *bus.Event) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeoutCause(ctx, w.publishTimeout, fmt.Errorf("publish event %s: no ack within %s", ev.ID, w.publishTimeout))
		_, err := w.pub.Publish(pctx, ev)
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			w.log.ErrorContext(ctx, "holder-lost event not published before shutdown", "event_id", ev.ID, "err", err)
			return
		}
		w.log.WarnContext(ctx, "publish holder-lost event failed; retrying", "event_id", ev.ID, "attempt", attempt, "err", err)
		wait := backoff/2 + rand.N(backoff/2+1) //nolint:gosec // jitter needs no cryptographic randomness
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// HolderLostEvent is the VIPHolderLost event for lease l of addr, which
// lapsed at revision rev, seen at now. Subject and key are vip/<address>;
// the id is the same for the same lapse wherever it is seen.
func HolderLostEvent(addr netip.Addr, l Lease, rev uint64, now time.Time) (*bus.Event, error) {
	if l.Holder == "" {
		return nil, errors.New("holder-lost event: lease without holder")
	}
	data, err := json.Marshal(HolderLost{VIP: addr.String(), Holder: l.Holder, Term: l.Term, ExpiredAt: l.Expires.UTC(), Revision: rev})
	if err != nil {
		return nil, fmt.Errorf("encode holder-lost event of vip %s: %w", addr, err)
	}
	h := sha256.New()
	for _, s := range []string{addr.String(), l.Holder, strconv.FormatUint(l.Term, 10), strconv.FormatUint(rev, 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return &bus.Event{
		SpecVersion:     bus.SpecVersion,
		ID:              "vip-" + hex.EncodeToString(h.Sum(nil)[:16]),
		Source:          EventSource,
		Type:            EventTypeHolderLost,
		Subject:         "vip/" + addr.String(),
		Time:            now.UTC(),
		DataContentType: "application/json",
		Status:          bus.StatusFiring,
		Key:             "vip/" + addr.String(),
		Data:            data,
	}, nil
}
