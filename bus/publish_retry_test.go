package bus

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

type flakyPublisher struct {
	fails, calls int
}

func (f *flakyPublisher) Publish(_ context.Context, _ ...*Event) (PublishResult, error) {
	f.calls++
	if f.calls <= f.fails {
		return PublishResult{}, ErrUnavailable
	}
	return PublishResult{Stored: 1}, nil
}

func TestPublishUntilStored(t *testing.T) {
	ev := &Event{ID: "e-1"}
	log := slog.New(slog.DiscardHandler)
	pub := &flakyPublisher{fails: 2}
	if !PublishUntilStored(t.Context(), pub, ev, time.Second, log) || pub.calls != 3 {
		t.Fatalf("stored=%v after %d calls, want stored after 3", pub.calls == 3, pub.calls)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
	defer cancel()
	never := &flakyPublisher{fails: 1 << 30}
	if PublishUntilStored(ctx, never, ev, time.Second, log) {
		t.Fatal("reported stored by a publisher that never stores")
	}
	if never.calls < 2 || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("%d attempts before the context ended", never.calls)
	}
}
