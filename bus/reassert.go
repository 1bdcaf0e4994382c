package bus

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// Reasserter is a detector's publisher that also re-asserts, every
// interval, each problem the detector last reported firing: it publishes a
// copy of the problem's firing event (Trigger TriggerResync) until the
// detector reports the problem resolved. The engine looks at a re-asserted
// problem only when it has no record of it, or when what held it back has
// cleared, so a crash between holding a problem back and re-driving it
// costs one interval, never the problem.
//
// Every replica running the same detector re-asserts on the same wall-clock
// ticks with the same event ids, so JetStream stores each once.
type Reasserter struct {
	pub   EventPublisher
	every time.Duration
	log   *slog.Logger

	mu     sync.Mutex
	firing map[problemKey]*Event
}

type problemKey struct{ source, key string }

var _ EventPublisher = (*Reasserter)(nil)

// NewReasserter returns a Reasserter publishing through pub every interval.
func NewReasserter(pub EventPublisher, every time.Duration, log *slog.Logger) (*Reasserter, error) {
	if every < time.Second {
		return nil, fmt.Errorf("resync interval %s: must be at least 1s", every)
	}
	return &Reasserter{pub: pub, every: every, log: log, firing: map[problemKey]*Event{}}, nil
}

// Publish publishes the events and, once they are stored, notes which
// problems are firing now.
func (r *Reasserter) Publish(ctx context.Context, events ...*Event) (PublishResult, error) {
	res, err := r.pub.Publish(ctx, events...)
	if err != nil {
		return res, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		if e.Trigger != "" {
			continue
		}
		k := problemKey{e.Source, e.Key}
		if e.Resolved() {
			delete(r.firing, k)
		} else {
			r.firing[k] = e
		}
	}
	return res, nil
}

// Run re-asserts the firing problems on every tick until ctx ends. Ticks
// fall on multiples of the interval since the Unix epoch.
func (r *Reasserter) Run(ctx context.Context) {
	for {
		now := time.Now()
		next := now.Truncate(r.every).Add(r.every)
		select {
		case <-ctx.Done():
			return
		case <-time.After(next.Sub(now)):
		}
		r.Reassert(ctx, next)
	}
}

// Reassert publishes the re-assertions of tick at once, in batches; a
// batch that fails is logged and left to the next tick.
func (r *Reasserter) Reassert(ctx context.Context, tick time.Time) {
	r.mu.Lock()
	batch := make([]*Event, 0, len(r.firing))
	for _, e := range r.firing {
		batch = append(batch, e.Repeat(TriggerResync, ResyncID(e.ID, tick)))
	}
	r.mu.Unlock()
	const size = 256
	for len(batch) > 0 {
		n := min(size, len(batch))
		if _, err := r.pub.Publish(ctx, batch[:n]...); err != nil {
			if ctx.Err() == nil {
				r.log.WarnContext(ctx, "re-asserting firing problems failed; the next resync tries again",
					"problems", len(batch), "err", err)
			}
			return
		}
		batch = batch[n:]
	}
}

// ResyncID is the id of the re-assertion of event id at tick: the same on
// every replica.
func ResyncID(id string, tick time.Time) string {
	return id + "~rs" + strconv.FormatInt(tick.Unix(), 10)
}
