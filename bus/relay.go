package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/selfheal/healer/action/agentparam"
)

// ErrForgedEvent is returned to an agent that sends an event about a node
// other than its own.
var ErrForgedEvent = errors.New("event names another node")

// ErrForeignSource is returned to an agent that sends an event in the name
// of a detector that does not run on nodes (alertmanager, etcdmember, ...).
var ErrForeignSource = errors.New("event source is not a node-local detector")

// ErrForeignKey is returned to an agent that sends an event whose key is
// not one of its own node's problems.
var ErrForeignKey = errors.New("event key belongs to another node")

// RelayConfig is what the relay checks agents' events against.
type RelayConfig struct {
	// Sources are the sources of the node-local detectors (the agent's
	// EventSources). An event from any other source is refused: an agent
	// speaks only for the detectors that run on its node.
	Sources []string
	// Meter counts the refused events (healer_agent_events_refused, which
	// Prometheus shows as healer_agent_events_refused_total, by reason).
	// Nil counts nothing.
	Meter metric.Meter
}

// Reasons an agent's event is refused, the values of the reason attribute
// of healer_agent_events_refused.
const (
	refusedSubject = "bad_subject"
	refusedEvent   = "bad_event"
	refusedNode    = "other_node"
	refusedSource  = "foreign_source"
	refusedKey     = "foreign_key"
	refusedID      = "bad_id"
)

// AgentEventID is the id an event an agent sent is stored under: the
// agent's own id prefixed by its node ("worker-3/rp-…"). Node names hold
// no '/' and no other detector's ids do, so one node's events never share
// an id (and JetStream's duplicate detection) with another's or with an
// Alertmanager alert's.
func AgentEventID(node, id string) string { return node + "/" + id }

// RelayAgentEvents takes the events agents send on
// healer.agent.<node>.events and stores them in HEALER_EVENTS through pub,
// answering each agent once its event is stored. An agent's credentials
// only let it publish on its own subject, and the relay holds it to what
// that node may say: the event must be about the node (subject
// node/<node>), come from one of cfg.Sources, carry a key of the node's own
// (starting "<node>/" or "<node>:", as the node-local detectors' keys do,
// so it cannot resolve another node's problem) and an id of letters,
// digits, '.', '_' and '-', which is stored as AgentEventID(node, id).
// Refused events are logged and counted. Serve replicas share the work in
// one queue group. The subscription ends when ctx does.
func RelayAgentEvents(ctx context.Context, nc *nats.Conn, pub EventPublisher, cfg RelayConfig, log *slog.Logger) error {
	meter := cfg.Meter
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	refused, err := meter.Int64Counter("healer_agent_events_refused",
		metric.WithDescription("Events node agents sent that serve refused to store, by reason."))
	if err != nil {
		return fmt.Errorf("agent relay metrics: %w", err)
	}
	r := &relay{pub: pub, sources: slices.Clone(cfg.Sources), refused: refused, log: log}
	subj := SubjectAgentPrefix + ".*." + AgentEventsSuffix
	sub, err := nc.QueueSubscribe(subj, QueueAgentRelay, func(m *nats.Msg) {
		b, _ := json.Marshal(r.one(ctx, m)) // a struct of a bool and a string always encodes
		if m.Reply != "" {
			_ = m.Respond(b) // the agent retries when the ack is lost
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subj, err)
	}
	go func() {
		<-ctx.Done()
		_ = sub.Unsubscribe()
	}()
	return nil
}

type relay struct {
	pub     EventPublisher
	sources []string
	refused metric.Int64Counter
	log     *slog.Logger
}

// one checks and stores one event, and says how it went.
func (r *relay) one(ctx context.Context, m *nats.Msg) AgentEventAck {
	parts := strings.Split(m.Subject, ".")
	if len(parts) != 4 {
		return r.refuse(ctx, refusedSubject, "", nil, errors.New("bad subject "+agentparam.Quote(m.Subject)))
	}
	node := NodeFromToken(parts[2])
	if _, err := NodeToken(node); err != nil {
		return r.refuse(ctx, refusedSubject, "", nil, err)
	}
	ev, err := DecodeEvent(m.Data)
	if err != nil {
		return r.refuse(ctx, refusedEvent, node, nil, err)
	}
	switch {
	case ev.Subject != "node/"+node:
		return r.refuse(ctx, refusedNode, node, ev, fmt.Errorf("%w: agent of node %s sent event %s about %s", ErrForgedEvent, node, agentparam.Quote(ev.ID), agentparam.Quote(ev.Subject)))
	case !slices.Contains(r.sources, ev.Source):
		return r.refuse(ctx, refusedSource, node, ev, fmt.Errorf("%w: agent of node %s sent event %s from source %s (node-local: %s)",
			ErrForeignSource, node, agentparam.Quote(ev.ID), agentparam.Quote(ev.Source), strings.Join(r.sources, ", ")))
	case ev.Trigger != "" || ev.Origin != "":
		// Re-drives and re-assertions are serve's to make.
		return r.refuse(ctx, refusedEvent, node, ev, fmt.Errorf("%w: agent of node %s sent event %s with trigger %s", ErrBadEvent, node, agentparam.Quote(ev.ID), agentparam.Quote(ev.Trigger)))
	case !strings.HasPrefix(ev.Key, node+"/") && !strings.HasPrefix(ev.Key, node+":"):
		return r.refuse(ctx, refusedKey, node, ev, fmt.Errorf("%w: agent of node %s sent event %s with key %s", ErrForeignKey, node, agentparam.Quote(ev.ID), agentparam.Quote(ev.Key)))
	}
	if err := agentparam.ID("event id", ev.ID); err != nil {
		return r.refuse(ctx, refusedID, node, ev, fmt.Errorf("%w: agent of node %s: %w", ErrBadEvent, node, err))
	}
	ev.ID = AgentEventID(node, ev.ID)
	res, err := r.pub.Publish(ctx, ev)
	if err != nil {
		// Not a refusal: the agent retries until it is stored.
		r.log.WarnContext(ctx, "agent event not stored", "node", node, "event_id", ev.ID, "err", err)
		return AgentEventAck{Error: err.Error()}
	}
	return AgentEventAck{Duplicate: res.Duplicates > 0}
}

// refuse logs and counts a refused event; the log names the node and the
// event's id, source and subject (quoted), never its data.
func (r *relay) refuse(ctx context.Context, reason, node string, ev *Event, err error) AgentEventAck {
	r.refused.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
	attrs := []any{"reason", reason, "node", node, "err", err}
	if ev != nil {
		attrs = append(attrs, "event_id", agentparam.Quote(ev.ID), "source", agentparam.Quote(ev.Source), "target", agentparam.Quote(ev.Subject))
	}
	r.log.WarnContext(ctx, "agent event refused", attrs...)
	return AgentEventAck{Error: err.Error()}
}
