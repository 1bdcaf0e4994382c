package agent

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/selfheal/healer/bus"
)

// Publisher sends the node's events to serve, which stores them in
// HEALER_EVENTS. Publish returns only after serve has acknowledged that
// each event is stored, so a detector that retries until then loses none.
type Publisher struct {
	nc   *nats.Conn
	subj string
}

// NewPublisher returns a publisher for node's events on nc.
func NewPublisher(nc *nats.Conn, node string) (*Publisher, error) {
	subj, err := bus.AgentSubject(node, bus.AgentEventsSuffix)
	if err != nil {
		return nil, err
	}
	return &Publisher{nc: nc, subj: subj}, nil
}

// Publish sends the events one by one and waits for each to be stored.
func (p *Publisher) Publish(ctx context.Context, events ...*bus.Event) (bus.PublishResult, error) {
	var res bus.PublishResult
	for _, e := range events {
		if err := e.Validate(); err != nil {
			return res, fmt.Errorf("%w: %w", bus.ErrBadEvent, err)
		}
		m, err := p.nc.RequestWithContext(ctx, p.subj, e.AppendJSON(make([]byte, 0, 256+len(e.Data))))
		if err != nil {
			return res, fmt.Errorf("%w: send event %s: %w", bus.ErrUnavailable, e.ID, err)
		}
		var ack bus.AgentEventAck
		if err := json.Unmarshal(m.Data, &ack); err != nil {
			return res, fmt.Errorf("%w: ack of event %s: %w", bus.ErrUnavailable, e.ID, err)
		}
		if ack.Error != "" {
			return res, fmt.Errorf("event %s refused: %s", e.ID, ack.Error)
		}
		if ack.Duplicate {
			res.Duplicates++
		} else {
			res.Stored++
		}
	}
	return res, nil
}
