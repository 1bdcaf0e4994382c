package vip

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// recordingPublisher publishes through the real bus publisher and keeps
// what was acknowledged, with when, on a channel.
type recordingPublisher struct {
	inner Publisher
	acked chan ackedEvent
}

type ackedEvent struct {
	event *bus.Event
	at    time.Time
}

func (r *recordingPublisher) Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	res, err := r.inner.Publish(ctx, events...)
	if err != nil {
		return res, err
	}
	now := time.Now()
	for _, e := range events {
		r.acked <- ackedEvent{event: e, at: now}
	}
	return res, nil
}

// startWatcher runs a Watcher over kv, publishing into a real
// HEALER_EVENTS stream on js.
func startWatcher(t *testing.T, js jetstream.JetStream, kv jetstream.KeyValue) *recordingPublisher {
	t.Helper()
	cfg := bus.StreamsConfig{}
	cfg.ApplyDefaults()
	if _, err := bus.EnsureStreams(t.Context(), js, cfg); err != nil {
		t.Fatal(err)
	}
	pub := &recordingPublisher{inner: bus.NewPublisher(js, 5*time.Second), acked: make(chan ackedEvent, 16)}
	w := NewWatcher(kv, pub, testLogger(t))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("watcher Run: %v", err)
			}
		})
	})
	return pub
}

func TestWatcherReportsLapsedLease(t *testing.T) {
	ns := startNATS(t)
	_, js, kv := connect(t, ns, "serve")
	_, _, kvNode := connect(t, ns, "m1")
	ctx := t.Context()
	addr := mustAddr("10.10.0.100")

	// A lease that lapsed before the watcher started is reported too.
	stale := &leases{kv: kvNode, ttl: 50 * time.Millisecond, now: time.Now}
	other := mustAddr("10.10.0.101")
	e0, _, err := stale.acquire(ctx, other, "m3", "old")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)

	pub := startWatcher(t, js, kv)
	select {
	case a := <-pub.acked:
		if a.event.Subject != "vip/10.10.0.101" || a.event.ID == "" {
			t.Fatalf("first event %+v", a.event)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no event for the lease that lapsed before the watcher started (%+v)", e0)
	}

	// A kept lease is not reported; a released one is not either.
	s := &leases{kv: kvNode, ttl: 300 * time.Millisecond, now: time.Now}
	e1, _, err := s.acquire(ctx, addr, "m1", "a1")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		time.Sleep(100 * time.Millisecond)
		if e1, _, err = s.renew(ctx, addr, e1); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case a := <-pub.acked:
		t.Fatalf("event for a lease that was being renewed: %+v", a.event)
	default:
	}
	if _, err := s.release(ctx, addr, "m1"); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-pub.acked:
		t.Fatalf("event for a released lease: %+v", a.event)
	case <-time.After(500 * time.Millisecond):
	}

	// A lease that stops being renewed is reported once, right after it
	// expires.
	e2, _, err := s.acquire(ctx, addr, "m2", "a2")
	if err != nil {
		t.Fatal(err)
	}
	var got ackedEvent
	select {
	case got = <-pub.acked:
	case <-time.After(5 * time.Second):
		t.Fatal("no VIPHolderLost event")
	}
	ev := got.event
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
	if ev.Type != EventTypeHolderLost || ev.Subject != "vip/10.10.0.100" || ev.Source != "vip" || ev.Status != bus.StatusFiring || ev.Key != "vip/10.10.0.100" {
		t.Fatalf("event %+v", ev)
	}
	var data HolderLost
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		t.Fatal(err)
	}
	if data.VIP != "10.10.0.100" || data.Holder != "m2" || data.Term != e2.Term || !data.ExpiredAt.Equal(e2.Expires) {
		t.Fatalf("event data %+v, lease %+v", data, e2)
	}
	if got.at.Before(e2.Expires) {
		t.Fatalf("reported at %s, before the lease expired at %s", got.at, e2.Expires)
	}
	if late := got.at.Sub(e2.Expires); late > 500*time.Millisecond {
		t.Errorf("reported %s after expiry", late)
	}
	select {
	case a := <-pub.acked:
		t.Fatalf("second event for the same lapse: %+v", a.event)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestHolderLostEventID(t *testing.T) {
	addr := mustAddr("10.10.0.100")
	l := Lease{VIP: "10.10.0.100", Holder: "m1", Term: 4, Expires: time.Unix(1000, 0)}
	a, err := HolderLostEvent(addr, l, 9, time.Unix(1001, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := HolderLostEvent(addr, l, 9, time.Unix(1002, 0))
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID {
		t.Errorf("same lapse seen twice got ids %s and %s; replicas must agree", a.ID, b.ID)
	}
	l.Term = 5
	c, err := HolderLostEvent(addr, l, 10, time.Unix(1002, 0))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == a.ID {
		t.Error("a later lapse has the id of an earlier one")
	}
}
