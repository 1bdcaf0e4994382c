package nodeproblem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/selfheal/healer/bus"
)

// Publishing: the informer handlers and timers queue events in order; one
// goroutine publishes them in batches and retries a failed batch with
// backoff until it is acknowledged or the detector stops. A retried batch
// may be partly stored already; JetStream drops the copies by event id.
const (
	maxBatch       = 256
	backoffInitial = 100 * time.Millisecond
	backoffMax     = 10 * time.Second
)

// outbox is the in-memory queue of events waiting for JetStream.
type outbox struct {
	mu    sync.Mutex
	queue []*bus.Event
	wake  chan struct{}
}

func (o *outbox) push(e *bus.Event) {
	o.mu.Lock()
	o.queue = append(o.queue, e)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// head returns up to n events from the front of the queue, without
// removing them.
func (o *outbox) head(n int) []*bus.Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*bus.Event(nil), o.queue[:min(n, len(o.queue))]...)
}

// drop removes n events from the front of the queue.
func (o *outbox) drop(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.queue[:n])
	o.queue = o.queue[n:]
	if len(o.queue) == 0 {
		o.queue = nil // let a large backing array go
	}
}

func (o *outbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.queue)
}

// publishLoop publishes queued events until ctx ends, then makes one last
// attempt, bounded by PublishTimeout, for what is still queued.
func (d *Detector) publishLoop(ctx context.Context) {
	backoff := backoffInitial
	failing := 0
	for ctx.Err() == nil {
		batch := d.out.head(maxBatch)
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
			case <-d.out.wake:
			}
			continue
		}
		err := d.publish(ctx, batch)
		if err == nil {
			d.out.drop(len(batch))
			if failing > 0 {
				d.log.InfoContext(ctx, "publishing events again", "failed_attempts", failing)
			}
			backoff, failing = backoffInitial, 0
			continue
		}
		if ctx.Err() != nil {
			break
		}
		failing++
		d.log.WarnContext(ctx, "publish events failed; retrying", "events", len(batch),
			"first_event_id", batch[0].ID, "attempt", failing, "retry_in", backoff, "err", err)
		// Full jitter keeps replicas that lost the bus together from
		// retrying in lockstep.
		wait := backoff/2 + rand.N(backoff/2+1) //nolint:gosec // jitter needs no cryptographic randomness
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		backoff = min(2*backoff, backoffMax)
	}

	// The detector is stopping. Give what is still queued one bounded
	// chance; whatever is left is re-derived from the Nodes at the next
	// start where it can be (conditions still holding, and cleared ones on
	// nodes healer cordoned).
	flush := context.WithoutCancel(ctx)
	for {
		batch := d.out.head(maxBatch)
		if len(batch) == 0 {
			return
		}
		if err := d.publish(flush, batch); err != nil {
			d.log.ErrorContext(ctx, "events not published before shutdown", "events", d.out.len(), "err", err)
			return
		}
		d.out.drop(len(batch))
	}
}

var errPublishTimeout = errors.New("no acknowledgement from JetStream in time")

// publish makes one attempt to store batch, bounded by PublishTimeout.
func (d *Detector) publish(ctx context.Context, batch []*bus.Event) error {
	ctx, cancel := context.WithTimeoutCause(ctx, d.cfg.PublishTimeout,
		fmt.Errorf("%w (%s)", errPublishTimeout, d.cfg.PublishTimeout))
	defer cancel()
	res, err := d.pub.Publish(ctx, batch...)
	if err != nil {
		d.publishErrors.Add(1)
		return fmt.Errorf("publish %d events from %s: %w", len(batch), batch[0].Subject, err)
	}
	d.published.Add(int64(res.Stored + res.Duplicates))
	d.duplicates.Add(int64(res.Duplicates))
	if !d.log.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	for _, e := range batch {
		d.log.DebugContext(ctx, "event published", "event_id", e.ID, "type", e.Type, "subject", e.Subject, "status", e.Status)
	}
	return nil
}
