package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnavailable wraps failures to reach JetStream. Callers that face a
// sender (the webhook) answer 503 so the sender retries.
var ErrUnavailable = errors.New("event bus unavailable")

// PublishResult counts what JetStream did with a batch.
type PublishResult struct {
	// Stored is the number of events newly stored.
	Stored int
	// Duplicates is the number JetStream recognised by Nats-Msg-Id as
	// already stored within the duplicate window.
	Duplicates int
}

// Publisher publishes events durably: Publish returns only after JetStream
// has acknowledged every event of the batch.
type Publisher struct {
	js      jetstream.JetStream
	timeout time.Duration
}

// NewPublisher returns a publisher that waits at most timeout for acks.
func NewPublisher(js jetstream.JetStream, timeout time.Duration) *Publisher {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Publisher{js: js, timeout: timeout}
}

// Publish sends the events with their ids as Nats-Msg-Id (so retries
// collapse) and waits for all acknowledgements. Any failure is reported as
// ErrUnavailable: some events of the batch may be stored, and a retry of
// the whole batch is safe because of the ids.
func (p *Publisher) Publish(ctx context.Context, events ...*Event) (PublishResult, error) {
	var res PublishResult
	ctx, cancel := context.WithTimeoutCause(ctx, p.timeout, fmt.Errorf("%w: no ack from JetStream within %s", ErrUnavailable, p.timeout))
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	for _, e := range events {
		msg, err := Message(e)
		if err != nil {
			return res, err
		}
		InjectTrace(ctx, msg.Header)
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(e.ID))
		if err != nil {
			return res, fmt.Errorf("%w: publish event %s: %w", ErrUnavailable, e.ID, err)
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				res.Duplicates++
			} else {
				res.Stored++
			}
		case err := <-f.Err():
			return res, fmt.Errorf("%w: publish event %s: %w", ErrUnavailable, events[i].ID, err) //nolint:gosec // futures has one entry per event, in order
		case <-ctx.Done():
			return res, context.Cause(ctx)
		}
	}
	return res, nil
}

// Message encodes an event as the NATS message healer publishes: the JSON
// event on its NATSSubject, with Nats-Msg-Id set to the event id. An event
// healer made itself (a re-drive, a re-assertion) lives TriggerTTL at
// most: a later one repeats it if it is still needed. e.Data must
// be valid JSON (detectors produce it with encoding/json); it is copied as
// it is.
func Message(e *Event) (*nats.Msg, error) {
	msg := nats.NewMsg(e.NATSSubject())
	msg.Data = e.AppendJSON(make([]byte, 0, 256+len(e.Data)))
	msg.Header.Set(jetstream.MsgIDHeader, e.ID)
	if e.Trigger != "" {
		msg.Header.Set(jetstream.MsgTTLHeader, TriggerTTL.String())
	}
	msg.Header.Set("Content-Type", "application/cloudevents+json")
	return msg, nil
}

// TriggerTTL is how long the events stream keeps an event healer made
// itself. Resyncs come every minute or so, so keeping each for a week like
// a detector's news would fill the stream with copies.
const TriggerTTL = 15 * time.Minute

// EventPublisher stores events durably; Publisher is the real one, and
// node agents have their own that goes through serve.
type EventPublisher interface {
	Publish(ctx context.Context, events ...*Event) (PublishResult, error)
}

var _ EventPublisher = (*Publisher)(nil)

// PublishUntilStored publishes ev through pub, each attempt bounded by
// timeout, retrying with jittered exponential backoff (100 ms up to 10 s)
// until it is acknowledged. It returns false, having logged why, when ctx
// ends first: a detector's event is never dropped while it runs.
func PublishUntilStored(ctx context.Context, pub EventPublisher, ev *Event, timeout time.Duration, log *slog.Logger) bool {
	log = log.With("event_id", ev.ID)
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("event %s not acknowledged within %s", ev.ID, timeout))
		_, err := pub.Publish(pctx, ev)
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			log.ErrorContext(ctx, "event not published before shutdown", "err", err)
			return false
		}
		log.WarnContext(ctx, "publish event failed; retrying", "attempt", attempt, "err", err)
		wait := backoff/2 + rand.N(backoff/2+1) //nolint:gosec // jitter needs no cryptographic randomness
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}
