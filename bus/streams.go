package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream, subject and bucket names. They are part of healer's wire contract:
// every replica and every agent must agree on them.
const (
	StreamEvents  = "HEALER_EVENTS"
	SubjectEvents = "healer.events"
	StreamAudit   = "HEALER_AUDIT"
	SubjectAudit  = "healer.audit"
	// BucketActions holds one entry per idempotency key (event, remediator,
	// target): the action's id and state, so a redelivered event never acts twice.
	BucketActions = "healer_actions"
	// BucketProblems holds one entry per open problem (target and problem
	// id): whether it is firing or resolved, the step it is at and, while
	// something holds it back, what and until when.
	BucketProblems = "healer_problems"
	// ConsumerEngine is the durable consumer the engine reads events with.
	ConsumerEngine = "healer-engine"
)

// StreamsConfig sizes the streams healer creates.
type StreamsConfig struct {
	// Replicas is the JetStream replica count (1 for the embedded server,
	// 3 for a production cluster).
	Replicas int `json:"replicas"`
	// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id, so an
	// Alertmanager retry or an HA twin within it is stored once.
	DuplicateWindow time.Duration `json:"duplicateWindow"`
	// EventsMaxAge is how long events are kept (the audit stream keeps
	// records forever).
	EventsMaxAge time.Duration `json:"eventsMaxAge"`
	// ActionsTTL is how long idempotency keys are remembered.
	ActionsTTL time.Duration `json:"actionsTTL"`
}

// ApplyDefaults fills zero fields with defaults.
func (c *StreamsConfig) ApplyDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 10 * time.Minute
	}
	if c.EventsMaxAge == 0 {
		c.EventsMaxAge = 7 * 24 * time.Hour
	}
	if c.ActionsTTL == 0 {
		c.ActionsTTL = 7 * 24 * time.Hour
	}
}

// Validate reports a configuration JetStream would refuse or that would lose events.
func (c *StreamsConfig) Validate() error {
	var errs []error
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d: must be 1 to 5", c.Replicas))
	}
	if c.DuplicateWindow <= 0 {
		errs = append(errs, fmt.Errorf("duplicateWindow %s: must be positive", c.DuplicateWindow))
	}
	if c.EventsMaxAge < c.DuplicateWindow {
		errs = append(errs, fmt.Errorf("eventsMaxAge %s: must be at least the duplicate window %s", c.EventsMaxAge, c.DuplicateWindow))
	}
	if c.ActionsTTL < c.DuplicateWindow {
		errs = append(errs, fmt.Errorf("actionsTTL %s: must be at least the duplicate window %s", c.ActionsTTL, c.DuplicateWindow))
	}
	return errors.Join(errs...)
}

// Streams are the JetStream handles healer works with.
type Streams struct {
	Events  jetstream.Stream
	Audit   jetstream.Stream
	Actions jetstream.KeyValue
	// Problems is the bucket of open problems (BucketProblems).
	Problems jetstream.KeyValue
}

// EnsureStreams creates the streams and buckets, or updates them to cfg.
// The audit stream denies deletes and purges: records can only be appended.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) (*Streams, error) {
	events, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamEvents,
		Description: "healer: fault and recovery events from detectors",
		Subjects:    []string{SubjectEvents + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		MaxAge:      cfg.EventsMaxAge,
		Retention:   jetstream.LimitsPolicy,
		AllowDirect: true,
		Discard:     jetstream.DiscardOld,
		// Re-driven and re-asserted events carry a TTL (TriggerTTL).
		AllowMsgTTL: true,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", StreamEvents, err)
	}
	audit, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamAudit,
		Description: "healer: hash-chained audit trail",
		Subjects:    []string{SubjectAudit},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Retention:   jetstream.LimitsPolicy,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
		// The chain is appended with an expected-last-sequence check, so
		// a duplicate window is not needed and would only cost memory.
		Duplicates: time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", StreamAudit, err)
	}
	actions, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketActions,
		Description: "healer: idempotency keys and action state",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		TTL:         cfg.ActionsTTL,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", BucketActions, err)
	}
	problems, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketProblems,
		Description: "healer: open problems, and what holds each back",
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		// A problem nobody re-asserts for this long is forgotten; a
		// detector that still sees it makes it again at its next resync.
		TTL:     cfg.ActionsTTL,
		History: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", BucketProblems, err)
	}
	return &Streams{Events: events, Audit: audit, Actions: actions, Problems: problems}, nil
}
