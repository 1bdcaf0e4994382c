package nodeproblem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/selfheal/healer/bus"
)

// startBus runs a real embedded JetStream with healer's streams.
func startBus(ctx context.Context, t testing.TB) (*bus.Publisher, jetstream.Stream) {
	t.Helper()
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); ns.Shutdown(); ns.WaitForShutdown() })
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	cfg := bus.StreamsConfig{}
	cfg.ApplyDefaults()
	st, err := bus.EnsureStreams(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return bus.NewPublisher(js, 5*time.Second), st.Events
}

// recorder wraps the real publisher: it remembers what JetStream
// acknowledged, and when, and can fail the first calls the way an
// unreachable bus does.
type recorder struct {
	inner     Publisher
	failFirst atomic.Int32

	mu    sync.Mutex
	acked []ackedEvent
	dups  int
}

type ackedEvent struct {
	event *bus.Event
	at    time.Time
}

func (r *recorder) Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	if r.failFirst.Add(-1) >= 0 {
		return bus.PublishResult{}, fmt.Errorf("%w: injected failure", bus.ErrUnavailable)
	}
	res, err := r.inner.Publish(ctx, events...)
	if err != nil {
		return res, err
	}
	now := time.Now()
	r.mu.Lock()
	for _, e := range events {
		r.acked = append(r.acked, ackedEvent{e, now})
	}
	r.dups += res.Duplicates
	r.mu.Unlock()
	return res, nil
}

// find returns the first acknowledged event with key and status.
func (r *recorder) find(key, status string) (ackedEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.acked {
		if a.event.Key == key && a.event.Status == status {
			return a, true
		}
	}
	return ackedEvent{}, false
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// run starts d and waits for its initial sync. The returned stop (also
// run when t ends) cancels it and waits for Run to return.
func run(ctx context.Context, t *testing.T, d *Detector) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-d.Synced():
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before its initial sync: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("no initial sync within 60s")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventsFor returns the events stored for key, oldest first.
func eventsFor(ctx context.Context, t testing.TB, s jetstream.Stream, key string) []*bus.Event {
	t.Helper()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subject := bus.EventSubject(Source, key)
	var out []*bus.Event
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		if m.Subject != subject {
			continue
		}
		e, err := bus.DecodeEvent(m.Data)
		if err != nil {
			t.Fatalf("message %d on %s: %v", seq, subject, err)
		}
		out = append(out, e)
	}
	return out
}

// waitEvent waits until an event with key and status is in the stream.
func waitEvent(ctx context.Context, t testing.TB, s jetstream.Stream, key, status string, within time.Duration) *bus.Event {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, e := range eventsFor(ctx, t, s, key) {
			if e.Status == status {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event for %s within %s; stored for it: %v", status, key, within, describe(eventsFor(ctx, t, s, key)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitUntil polls cond until it holds or within passes.
func waitUntil(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// assertNoEventUntil checks repeatedly, until the deadline, that nothing
// is stored for key.
func assertNoEventUntil(ctx context.Context, t testing.TB, s jetstream.Stream, key string, until time.Time) {
	t.Helper()
	for {
		if evs := eventsFor(ctx, t, s, key); len(evs) > 0 {
			t.Fatalf("%s: %d early, before %s: %v", key, len(evs), until.Format(time.StampMilli), describe(evs))
		}
		if !time.Now().Before(until) {
			return
		}
		time.Sleep(min(50*time.Millisecond, time.Until(until)+time.Millisecond))
	}
}

func describe(evs []*bus.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s %s %s %s at %s", e.ID, e.Type, e.Status, e.Subject, e.Time.Format(time.RFC3339Nano))
	}
	return out
}
